"""The group's own passwords rotate without a gap (README, Rotating secrets): the replication
and Sentinel users' passwords, in the two steps a user runs, under a task stream from the
bundle's producer. Step 1 (new passwords, the old ones as `_previous`) restarts the servers in
turn (a replica reads masterauth at its start) and the Sentinels one at a time; step 2 (the
`_previous` emptied) reloads the ACL and restarts the Sentinels, no server. No login of a
replica or a Sentinel is refused at any point (the servers' and Sentinels' ACL LOG), no task
is lost or refused, and the old passwords get WRONGPASS afterwards.

The group keeps the new passwords (the inventory is not edited): the last of `make test`'s
modules in the ha scenario (conftest.ORDER)."""

from __future__ import annotations

import json

from conftest import (
    GROUP_VARS,
    REDIS,
    WORKER,
    cli,
    deploy,
    healthy,
    produce,
    rolling_deploy,
    wait_for,
)

from testkit import recap

# The inventory's (molecule/ha/inventory/group_vars/redis.yml).
OLD = {user: str(GROUP_VARS[f"redis_acl_{user}_password"]) for user in ("replication", "sentinel")}
# THROWAWAY TEST SECRETS for local containers only.
NEW = {
    "replication": "ha-test-only-replication-rotated-5e83c1",
    "sentinel": "ha-test-only-sentinel-rotated-0d47b9",
}
SENTINEL_PORT = 26379


def step(previous: bool) -> str:
    values: dict[str, str] = {}
    for user in NEW:
        values[f"redis_acl_{user}_password"] = NEW[user]
        if previous:
            values[f"redis_acl_{user}_password_previous"] = OLD[user]
    return json.dumps(values)


def refused_logins() -> list[str]:
    """The ACL LOG entries of every server and Sentinel of the group (each a failed login or
    a denied command)."""
    entries = []
    for host in REDIS:
        for port in (6379, SENTINEL_PORT):
            log = cli(host, "ACL", "LOG", port=port)
            if log:
                entries.append(f"{host}:{port}: {log[:300]}")
    return entries


def login(host: str, user: str, password: str, port: int) -> str:
    """What redis-cli prints for a PING as USER (a refused login: `AUTH failed: WRONGPASS`)."""
    return cli(host, "PING", port=port, user=user, password=password)


def test_a_change_in_one_step_stops_the_run_before_any_host_changes() -> None:
    """A user who changes the Sentinel password without the `_previous` (a mistake that would
    leave the Sentinels refusing each other) is stopped by validation, which asks the running
    group which passwords it knows."""
    proc = deploy("-e", json.dumps({"redis_acl_sentinel_password": NEW["sentinel"]}))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert (
        "redis_acl_sentinel_password is not the password the group's Sentinels know, and"
        " redis_acl_sentinel_password_previous is empty"
    ) in out, out[-3000:]
    assert NEW["sentinel"] not in out
    counts = recap(proc.stdout)
    assert set(counts) == {*REDIS, WORKER}, out[-3000:]
    assert all(c["changed"] == 0 for c in counts.values()), counts


def test_the_replication_and_sentinel_passwords_rotate_without_a_gap() -> None:
    for host in REDIS:
        for port in (6379, SENTINEL_PORT):
            assert cli(host, "ACL", "LOG", "RESET", port=port) == "OK"

    first = rolling_deploy("-e", step(previous=True))
    assert first["deploy_rc"] == 0, first["deploy_tail"]
    assert first["servers_restarted"] == len(REDIS), first  # masterauth: in turn
    wait_for("the group healthy after step 1", healthy, 60)
    assert refused_logins() == []

    second = rolling_deploy("-e", step(previous=False))
    assert second["deploy_rc"] == 0, second["deploy_tail"]
    assert second["servers_restarted"] == 0, second  # ACL LOAD only
    wait_for("the group healthy after step 2", healthy, 60)
    assert refused_logins() == []

    for figures in (first, second):
        assert figures["tasks_lost"] == 0, figures
        assert figures["sends_refused"] == 0, figures
        assert not figures["worker_restarted"], figures
    for host in REDIS:
        for user, port in (("replication", 6379), ("sentinel", 6379), ("sentinel", SENTINEL_PORT)):
            assert login(host, user, NEW[user], port) == "PONG", (host, user, port)
            assert "WRONGPASS" in login(host, user, OLD[user], port), (host, user)
        # Each Sentinel still knows the other two.
        sentinels = cli(host, "SENTINEL", "SENTINELS", "bundle", port=SENTINEL_PORT)
        assert sentinels.count("runid") == len(REDIS) - 1, (host, sentinels)
    assert produce(5)["done"] == 5
