"""Password rotation without a gap (README, Rotating secrets): while a `_previous` password is
set, the redis role's aclfile holds its hash beside the current one's, the role's own checks
log in with a password Redis takes at every point of the two steps, and validation refuses a
previous password where it cannot work."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from role_values import role_values

sys.path.insert(0, str(REPO / "roles/redis/filter_plugins"))
import bundle_redis_validate  # a filter plugin file, not an installed module
import redis_acl
from redis_acl import redis_acl_password_hashes

ADMIN, CELERY, MONITOR = (f"test-only-{u}-0123456789" for u in ("admin", "celery", "monitor"))
OLD_ADMIN, OLD_CELERY, OLD_MONITOR = (f"test-only-old-{u}-0123456789" for u in ("a", "c", "m"))
CURRENT = {
    "redis_password": ADMIN,
    "redis_acl_celery_password": CELERY,
    "redis_acl_monitor_password": MONITOR,
}
PREVIOUS = {
    "redis_password_previous": OLD_ADMIN,
    "redis_acl_celery_password_previous": OLD_CELERY,
    "redis_acl_monitor_password_previous": OLD_MONITOR,
}


def sha(password: str) -> str:
    return "#" + hashlib.sha256(password.encode()).hexdigest()


# --- the filter ----------------------------------------------------------------------------


def test_one_hash_without_a_previous_password() -> None:
    assert redis_acl_password_hashes(CELERY) == sha(CELERY)
    assert redis_acl_password_hashes(CELERY, "") == sha(CELERY)
    assert redis_acl_password_hashes(CELERY, None) == sha(CELERY)


def test_the_previous_hash_follows_the_current_one() -> None:
    assert redis_acl_password_hashes(CELERY, OLD_CELERY) == f"{sha(CELERY)} {sha(OLD_CELERY)}"


def test_a_previous_equal_to_the_current_adds_nothing() -> None:
    assert redis_acl_password_hashes(CELERY, CELERY) == sha(CELERY)


def test_non_ascii_passwords_hash_as_utf8() -> None:
    assert redis_acl_password_hashes("mot-de-passe-été-0123", "ancien-été-0123456789") == (
        f"{sha('mot-de-passe-été-0123')} {sha('ancien-été-0123456789')}"
    )


def test_the_filter_is_registered() -> None:
    assert redis_acl.FilterModule().filters() == {
        "redis_acl_password_hashes": redis_acl_password_hashes
    }


# --- the role's aclfile and admin login, rendered by Ansible ---------------------------------


def render(tmp_path: Path, variables: dict[str, Any]) -> dict[str, str]:
    """The role's __redis_acl_content and __redis_admin_password for these variables."""
    return role_values(
        tmp_path,
        "redis",
        {"acl": "__redis_acl_content", "admin": "__redis_admin_password"},
        variables,
        [REPO / "roles/redis/filter_plugins/redis_acl.py"],
    )


def hashes(acl: str) -> dict[str, list[str]]:
    """Each user of the aclfile: its password hashes, in order."""
    return {
        line.split()[1]: [word for word in line.split() if word.startswith("#")]
        for line in acl.splitlines()
        if line.startswith("user ")
    }


def test_the_aclfile_holds_the_current_password_only(tmp_path: Path) -> None:
    rendered = render(tmp_path, {"redis_auth_mode": "acl"} | CURRENT)
    assert hashes(rendered["acl"]) == {
        "default": [],
        "admin": [sha(ADMIN)],
        "celery": [sha(CELERY)],
        "monitor": [sha(MONITOR)],
    }
    assert rendered["admin"] == ADMIN


def test_during_a_rotation_the_aclfile_holds_both_passwords(tmp_path: Path) -> None:
    rendered = render(tmp_path, {"redis_auth_mode": "acl"} | CURRENT | PREVIOUS)
    assert hashes(rendered["acl"]) == {
        "default": [],
        "admin": [sha(ADMIN), sha(OLD_ADMIN)],
        "celery": [sha(CELERY), sha(OLD_CELERY)],
        "monitor": [sha(MONITOR), sha(OLD_MONITOR)],
    }
    # Each line keeps its rules after the hashes; no password in clear.
    lines = rendered["acl"].splitlines()
    assert [line.split()[5:7] for line in lines[1:]] == [
        ["~*", "&*"],
        ["resetkeys", "~celery:*"],
        ["resetkeys", "%R~*"],
    ]
    for password in [*CURRENT.values(), *PREVIOUS.values()]:
        assert password not in rendered["acl"]
    # Redis knows only the old admin password before this run's ACL LOAD, both after it: the
    # role's checks and handlers log in with the old one until it is removed.
    assert rendered["admin"] == OLD_ADMIN


def test_rotating_one_user_leaves_the_others_alone(tmp_path: Path) -> None:
    variables = {"redis_auth_mode": "acl", "redis_acl_celery_password_previous": OLD_CELERY}
    rendered = render(tmp_path, variables | CURRENT)
    assert hashes(rendered["acl"])["celery"] == [sha(CELERY), sha(OLD_CELERY)]
    assert hashes(rendered["acl"])["admin"] == [sha(ADMIN)]
    assert rendered["admin"] == ADMIN


def test_a_sentinel_rotation_lets_every_sentinel_take_both_passwords(tmp_path: Path) -> None:
    """A Sentinel's own users (the peers log in as the Sentinel user): both hashes while the
    previous is set, so a peer not yet restarted, still using the old one, gets in."""
    new, old = "test-only-new-sentinel-0123456789", "test-only-old-sentinel-0123456789"
    variables = {"redis_auth_mode": "acl", "redis_acl_sentinel_password": new} | CURRENT
    rotating = variables | {"redis_acl_sentinel_password_previous": old}
    for given, expected in ((variables, [sha(new)]), (rotating, [sha(new), sha(old)])):
        where = tmp_path / str(len(expected))
        where.mkdir()
        users = role_values(
            where,
            "redis",
            {"users": "__redis_sentinel_users"},
            given,
            [REPO / "roles/redis/filter_plugins/redis_acl.py"],
        )["users"]
        assert hashes(users)["sentinel"] == expected
        assert new not in users
        assert old not in users


# --- validation ------------------------------------------------------------------------------

ACL = {"redis_auth_mode": "acl"} | CURRENT


def requirepass_message(name: str) -> str:
    return (
        f"{name} is set but redis_auth_mode is requirepass: requirepass holds one password, so"
        " Redis cannot accept the old and the new one side by side. Switch to redis_auth_mode:"
        f" acl to rotate without a gap (README, Rotating secrets), or empty {name}."
    )


def same_message(name: str, vault: str) -> str:
    return (
        f"{name}_previous is the same as {name}. Step 1 of a rotation puts the new password in"
        f" {name} ({vault} in the vault file) and the old one in {name}_previous"
        f" ({vault}_previous); once every client uses the new one, empty {name}_previous and"
        " deploy again."
    )


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (ACL, []),
        (ACL | PREVIOUS, []),
        (ACL | {"redis_password_previous": None}, []),
        (
            {"redis_auth_mode": "requirepass", "redis_password": ADMIN}
            | {"redis_password_previous": OLD_ADMIN},
            [requirepass_message("redis_password_previous")],
        ),
        (
            {"redis_auth_mode": "requirepass", "redis_password": ADMIN}
            | {"redis_acl_celery_password_previous": OLD_CELERY},
            [requirepass_message("redis_acl_celery_password_previous")],
        ),
        (
            ACL | {"redis_password_previous": ADMIN},
            [same_message("redis_password", "vault_redis_password")],
        ),
        (
            ACL
            | {
                "redis_acl_celery_password_previous": CELERY,
                "redis_acl_monitor_password_previous": MONITOR,
            },
            [
                same_message("redis_acl_celery_password", "vault_redis_celery_password"),
                same_message("redis_acl_monitor_password", "vault_redis_monitor_password"),
            ],
        ),
        (
            ACL
            | {
                "redis_acl_replication_password": "test-only-replication-0123456789",
                "redis_acl_replication_password_previous": "test-only-replication-0123456789",
                "redis_acl_sentinel_password": "test-only-sentinel-0123456789",
                "redis_acl_sentinel_password_previous": "test-only-sentinel-0123456789",
            },
            [
                same_message("redis_acl_replication_password", "vault_redis_replication_password"),
                same_message("redis_acl_sentinel_password", "vault_redis_sentinel_password"),
            ],
        ),
    ],
    ids=[
        "no rotation",
        "every user rotating",
        "previous null",
        "requirepass admin",
        "requirepass celery",
        "same admin",
        "same celery and monitor",
        "same replication and sentinel",
    ],
)
def test_previous_password_rules(variables: dict[str, Any], expected: list[str]) -> None:
    errors = bundle_redis_validate.bundle_redis_password_errors(variables)
    assert errors == expected
    for password in [*CURRENT.values(), *PREVIOUS.values()]:
        assert not [e for e in errors if password in e], "a message shows a password"
