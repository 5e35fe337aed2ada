"""What the Celery side asks of the Redis server (playbooks/filter_plugins/bundle_celery_redis.py)
and how the generic redis role turns it into the aclfile and the broker's keyspace events."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO
from role_values import role_values

sys.path.insert(0, str(REPO / "playbooks/filter_plugins"))
import bundle_celery_redis  # a filter plugin file, not an installed module
from bundle_celery_redis import bundle_celery_redis_needs


def test_kombus_channels_and_rcbundles_keyspace_events() -> None:
    assert bundle_celery_redis_needs("taskapp:", 0) == {
        "acl_channels": [
            "__keyspace@0__:taskapp:*",
            "taskapp:/0.celery.pidbox",
            "taskapp:/0.celeryev/worker.*",
        ],
        "keyspace_events": "Kl",
    }


def test_the_channels_name_the_broker_database() -> None:
    # kombu names its pidbox and event patterns after the database; an int or its string
    # (as a value from -e arrives) give the same channels.
    assert bundle_celery_redis_needs("shop:", "3") == bundle_celery_redis_needs("shop:", 3)
    assert bundle_celery_redis_needs("shop:", 3)["acl_channels"] == [
        "__keyspace@3__:shop:*",
        "shop:/3.celery.pidbox",
        "shop:/3.celeryev/worker.*",
    ]


def test_the_filter_is_registered() -> None:
    filters = bundle_celery_redis.FilterModule().filters()
    assert filters == {"bundle_celery_redis_needs": bundle_celery_redis_needs}


def test_the_redis_role_names_nothing_of_kombus() -> None:
    for path in sorted((REPO / "roles/redis").rglob("*")):
        if path.is_file():
            text = path.read_text()
            for name in ("pidbox", "celeryev", "__keyspace@"):
                assert name not in text, f"{path.relative_to(REPO)} names {name}"


def test_playbooks_redis_hands_the_role_the_celery_sides_needs() -> None:
    play = yaml.safe_load((REPO / "playbooks/redis.yml").read_text())[0]
    (role,) = play["roles"]
    assert role["role"] == "redis"
    wiring = role["vars"]["__redis_client_needs"]
    assert "bundle_celery_redis_needs(redis_acl_celery_broker_db)" in wiring


CELERY_RULES = (
    "resetkeys ~celery:* resetchannels &celery:* &__keyspace@0__:celery:*"
    " &celery:/0.celery.pidbox &celery:/0.celeryev/worker.* -@all +hello +auth"
)
WIRED = "{{ redis_acl_key_prefix | bundle_celery_redis_needs(redis_acl_celery_broker_db) }}"


def render(tmp_path: Path, variables: dict[str, Any]) -> dict[str, str]:
    """The role's aclfile and keyspace events for these variables, with the playbooks' filter
    plugins beside the play as playbooks/redis.yml has them."""
    secrets = {
        "redis_password": "test-only-admin-0123456789",
        "redis_acl_celery_password": "test-only-celery-0123456789",
        "redis_acl_monitor_password": "test-only-monitor-0123456789",
    }
    return role_values(
        tmp_path,
        "redis",
        {"acl": "__redis_acl_content", "events": "__redis_broker_keyspace_events"},
        secrets | variables,
        [
            REPO / "playbooks/filter_plugins/bundle_celery_redis.py",
            REPO / "roles/redis/filter_plugins/redis_acl.py",
        ],
    )


def celery_line(acl: str) -> str:
    (line,) = [line for line in acl.splitlines() if line.startswith("user celery ")]
    return line.split(" ", 4)[4]  # after "user celery on #HASH"


@pytest.mark.parametrize(
    ("variables", "rules", "events"),
    [
        # The bundle: the aclfile's rules and the events as before the split.
        ({"__redis_client_needs": WIRED}, CELERY_RULES, "Kl"),
        # Your own channels after Celery's; your flags first, each flag once.
        (
            {
                "__redis_client_needs": WIRED,
                "redis_acl_key_prefix": "shop:",
                "redis_acl_celery_broker_db": 2,
                "redis_acl_celery_channels": ["shop:/2.own.*", "audit"],
                "redis_notify_keyspace_events": "Ex",
            },
            "resetkeys ~shop:* resetchannels &shop:* &__keyspace@2__:shop:*"
            " &shop:/2.celery.pidbox &shop:/2.celeryev/worker.* &shop:/2.own.* &audit -@all",
            "ExKl",
        ),
        # The role on its own: the prefix only, and no keyspace events.
        ({}, "resetkeys ~celery:* resetchannels &celery:* -@all +hello +auth", ""),
    ],
    ids=["bundle", "bundle and your own", "role alone"],
)
def test_the_aclfile_rules(
    tmp_path: Path, variables: dict[str, Any], rules: str, events: str
) -> None:
    rendered = render(tmp_path, variables)
    assert celery_line(rendered["acl"]).startswith(rules)
    assert rendered["events"] == events
