"""What the Celery side asks of the Redis server, beyond the redis role's generic settings.

The redis role knows nothing of kombu: it confines its least-privilege application user to
redis_acl_key_prefix and to the extra channels it is given, and writes the notify-keyspace-events
it is given. The names kombu and rcbundle's workers use live here, once: playbooks/redis.yml
hands the role what this filter returns (the role's __redis_client_needs), from the Redis host's
own redis_acl_key_prefix and redis_acl_celery_broker_db, the same values the workers follow
(roles/celery_worker/filter_plugins/celery_worker_redis.py).

Beside the playbooks, like bundle_validate.py, so that every playbook in this directory has it
whatever the configuration (the repository's ansible.cfg, Molecule's, ansible-lint's).
"""

from __future__ import annotations

from typing import Any

# K: keyspace channels, l: list commands. rcbundle's workers SUBSCRIBE to the keyspace channel
# of each of their queues, so a task pushed by any client (plain Celery included) wakes an idle
# worker at once instead of at its next poll.
KEYSPACE_EVENTS = "Kl"


def celery_acl_channels(prefix: str, broker_db: int | str) -> list[str]:
    """The channels outside PREFIX* the Celery user needs, as kombu and rcbundle name them.

    Redis's ACL matches a PSUBSCRIBE pattern literally against the user's channel rules, so
    kombu's patterns are listed as kombu writes them: the pidbox (`celery inspect`, `control`)
    and the worker events, both named after the broker's database.
    """
    db = int(broker_db)
    return [
        f"__keyspace@{db}__:{prefix}*",  # the queues' keyspace channels (KEYSPACE_EVENTS)
        f"{prefix}/{db}.celery.pidbox",
        f"{prefix}/{db}.celeryev/worker.*",
    ]


def bundle_celery_redis_needs(prefix: str, broker_db: int | str) -> dict[str, Any]:
    """Filter: redis_acl_key_prefix | bundle_celery_redis_needs(redis_acl_celery_broker_db).

    The redis role's __redis_client_needs: acl_channels (added to the application user's
    channel rules in acl mode) and keyspace_events (merged into the broker's
    notify-keyspace-events).
    """
    return {
        "acl_channels": celery_acl_channels(prefix, broker_db),
        "keyspace_events": KEYSPACE_EVENTS,
    }


class FilterModule:
    """The Celery side's needs of the Redis server."""

    def filters(self) -> dict[str, Any]:
        return {"bundle_celery_redis_needs": bundle_celery_redis_needs}
