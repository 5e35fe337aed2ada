"""A replicated Redis group (roles/redis/filter_plugins/redis_replication.py): which host is the
master, the address the group uses, and the rules validation applies before any host changes."""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "roles/redis/filter_plugins"))
from redis_replication import (  # the role's plugin, not installed
    current_master,
    group_password_errors,
    mismatch_errors,
    replicaof,
    replication_address,
    replication_errors,
    role_defaults,
    unknown_passwords,
    user_passwords,
)

HOSTS = ["r1", "r2", "r3"]
SECRET = "s3cret-s3cret-s3cret"


def facts(address: str, **variables: object) -> dict[str, Any]:
    return {"ansible_facts": {"default_ipv4": {"address": address}}, **variables}


HOSTVARS = {f"r{i}": facts(f"10.0.0.{i}") for i in (1, 2, 3)}


def good(**changes: object) -> dict[str, Any]:
    v = dict(role_defaults()) | {
        "redis_replication_group": "redis",
        "redis_auth_mode": "acl",
        "redis_acl_replication_password": SECRET,
        "redis_acl_sentinel_password": SECRET + "x",
    }
    return v | changes


def test_the_address_is_the_first_bind_address_that_is_not_loopback() -> None:
    assert replication_address(facts("10.0.0.1")) == "10.0.0.1"
    assert replication_address(facts("10.0.0.1", redis_bind=["127.0.0.1", "192.168.5.5"])) == (
        "192.168.5.5"
    )
    assert replication_address(facts("10.0.0.1", redis_bind=["127.0.0.1", "::1"])) == "10.0.0.1"


def test_the_master_is_the_host_sentinel_names() -> None:
    assert current_master(["10.0.0.3", "6379"], HOSTS, HOSTVARS) == "r3"


@pytest.mark.parametrize(
    ("host", "role", "wanted"),
    [
        ("r1", ["master", "0"], []),
        ("r1", ["slave", "10.0.0.2", "6379", "connected", "10"], ["NO", "ONE"]),
        ("r2", ["slave", "10.0.0.1", "6379", "connected", "10"], []),
        # a single server before the group grew, or one following another host or port
        ("r2", ["master", "0"], ["10.0.0.1", "6379"]),
        ("r2", ["slave", "10.0.0.3", "6379", "connected", "10"], ["10.0.0.1", "6379"]),
        ("r2", ["slave", "10.0.0.1", "6380", "connected", "10"], ["10.0.0.1", "6379"]),
        ("r2", [], ["10.0.0.1", "6379"]),
    ],
)
def test_replicaof_gives_each_server_its_place_and_leaves_one_that_has_it(
    host: str, role: list[str], wanted: list[str]
) -> None:
    assert replicaof(role, "r1", host, HOSTVARS, 6379) == wanted


@pytest.mark.parametrize("answer", [[], [""], ["10.9.9.9", "6379"]])
def test_without_an_answer_naming_a_host_the_first_host_is_the_master(answer: list[str]) -> None:
    # No Sentinel yet (a new group, or one growing from its single server, listed first).
    assert current_master(answer, HOSTS, HOSTVARS) == "r1"


def test_a_good_group_passes() -> None:
    assert replication_errors(good(), HOSTS) == []
    assert mismatch_errors(HOSTS, HOSTVARS) == []


def test_a_single_server_has_no_replication_rules() -> None:
    assert replication_errors({"redis_auth_mode": "requirepass"}, ["r1"]) == []
    assert replication_errors({"redis_auth_mode": "requirepass"}, []) == []


@pytest.mark.parametrize(
    ("hosts", "changes", "expected"),
    [
        (["r1", "r2"], {}, "an odd number of hosts"),
        ([*HOSTS, "r4"], {}, "an odd number of hosts"),
        (HOSTS, {"redis_auth_mode": "requirepass"}, "redis_auth_mode: acl"),
        (HOSTS, {"redis_results_server": True}, "redis_results_server"),
        (HOSTS, {"redis_sentinel_port": 6379}, "redis_sentinel_port (6379)"),
        (HOSTS, {"redis_sentinel_master_name": "my master"}, "redis_sentinel_master_name"),
        (HOSTS, {"redis_sentinel_down_after_ms": 10}, "redis_sentinel_down_after_ms (10)"),
        (HOSTS, {"redis_sentinel_failover_timeout_ms": 5000}, "failover_timeout_ms (5000)"),
        (HOSTS, {"redis_min_replicas_to_write": 3}, "redis_min_replicas_to_write (3)"),
        (HOSTS, {"redis_min_replicas_max_lag": 0}, "redis_min_replicas_max_lag (0)"),
        (HOSTS, {"redis_acl_replication_password": ""}, "redis_acl_replication_password"),
        (HOSTS, {"redis_acl_sentinel_password": "short"}, "redis_acl_sentinel_password"),
        (HOSTS, {"redis_acl_sentinel_user": "celery"}, "redis_acl_sentinel_user"),
    ],
)
def test_a_bad_group_is_refused_naming_the_variable(
    hosts: list[str], changes: dict[str, Any], expected: str
) -> None:
    errors = replication_errors(good(**changes), hosts)
    assert any(expected in e for e in errors), errors
    assert not any(SECRET in e for e in errors)


def test_settings_that_differ_across_the_group_are_named() -> None:
    hostvars = HOSTVARS | {"r3": facts("10.0.0.3", redis_port=6390)}
    (error,) = mismatch_errors(HOSTS, hostvars)
    assert error.startswith("redis_port is 6379 on r1 but r3: 6390")


def test_a_secret_that_differs_is_named_and_not_shown() -> None:
    hostvars = HOSTVARS | {"r2": facts("10.0.0.2", redis_acl_sentinel_password=SECRET)}
    (error,) = mismatch_errors(HOSTS, hostvars)
    assert error.startswith("redis_acl_sentinel_password differs between r1 and r2")
    assert SECRET not in error


# --- a group's own passwords, changed in one step -------------------------------------------

NEW_PW, OLD_PW = "test-only-new-replication-0123", "test-only-old-replication-0123"


def getuser(*passwords: str) -> list[str]:
    """An ACL GETUSER reply's lines for a user with these passwords."""
    hashes = [hashlib.sha256(p.encode()).hexdigest() for p in passwords]
    return ["flags", "on", "passwords", *hashes, "commands", "-@all +psync", "keys", ""]


def asked(lines: list[str], rc: int = 0) -> dict[str, Any]:
    item = {"variable": "redis_acl_replication_password", "where": "the group's servers"}
    return {"item": item, "rc": rc, "stdout_lines": lines}


def test_the_password_hashes_of_a_getuser_reply() -> None:
    assert user_passwords(getuser(NEW_PW, OLD_PW)) == [
        hashlib.sha256(p.encode()).hexdigest() for p in (NEW_PW, OLD_PW)
    ]
    assert user_passwords(getuser()) == []
    assert user_passwords(["(nil)"]) is None


@pytest.mark.parametrize(
    ("running", "variables"),
    [
        (getuser(NEW_PW), {"redis_acl_replication_password": NEW_PW}),  # nothing changes
        (
            getuser(OLD_PW),
            {  # step 1
                "redis_acl_replication_password": NEW_PW,
                "redis_acl_replication_password_previous": OLD_PW,
            },
        ),
        (getuser(NEW_PW, OLD_PW), {"redis_acl_replication_password": NEW_PW}),  # step 2
    ],
    ids=["unchanged", "step 1", "step 2"],
)
def test_the_two_steps_pass(running: list[str], variables: dict[str, str]) -> None:
    assert group_password_errors([asked(running)], variables) == []


def test_a_change_in_one_step_is_refused_naming_the_variables_only() -> None:
    (error,) = group_password_errors(
        [asked(getuser(OLD_PW))], {"redis_acl_replication_password": NEW_PW}
    )
    assert error.startswith(
        "redis_acl_replication_password is not the password the group's servers know, and"
        " redis_acl_replication_password_previous is empty"
    )
    assert "Rotate it in two steps (README, Rotating secrets)" in error
    assert NEW_PW not in error
    assert OLD_PW not in error


def test_a_previous_the_group_does_not_know_is_refused() -> None:
    variables = {
        "redis_acl_replication_password": NEW_PW,
        "redis_acl_replication_password_previous": "test-only-mistyped-0123456789",
    }
    (error,) = group_password_errors([asked(getuser(OLD_PW))], variables)
    assert error.startswith(
        "Neither redis_acl_replication_password nor redis_acl_replication_password_previous"
    )


@pytest.mark.parametrize(
    "answer",
    [
        asked(["Could not connect to Redis at 127.0.0.1:26379: Connection refused"], rc=1),
        asked(["(nil)"]),  # a single host growing into a group: no such user yet
        {"skipped": True, "item": asked([])["item"]},
    ],
    ids=["nothing answers", "no such user", "not a group"],
)
def test_a_group_that_does_not_answer_is_not_judged(answer: dict[str, Any]) -> None:
    assert group_password_errors([answer], {"redis_acl_replication_password": NEW_PW}) == []


def test_the_passwords_the_running_group_does_not_know_yet() -> None:
    """sentinel.yml's live ACL SETUSER, in step 1 only: a group that knows the current
    password already (step 2, a second run of step 1) or did not answer needs none."""
    current = {"redis_acl_replication_password": NEW_PW}
    assert unknown_passwords([asked(getuser(OLD_PW))], current) == [
        "redis_acl_replication_password"
    ]
    assert unknown_passwords([asked(getuser(OLD_PW, NEW_PW))], current) == []
    assert unknown_passwords([asked(["(nil)"]), asked([], rc=1)], current) == []
