"""The replicated group as converge left it: one master, two replicas in sync, a Sentinel on
each host agreeing on the master, and each login confined to its own job."""

from __future__ import annotations

from conftest import CELERY_PASSWORD, GROUP_VARS, MASTER_NAME, REDIS, WORKER, cli, master, on


def test_one_master_and_two_replicas_in_sync() -> None:
    first = master()
    assert first == REDIS[0]  # a new group starts with its first host
    roles = {host: cli(host, "ROLE").splitlines()[0] for host in REDIS}
    assert roles == {host: "master" if host == first else "slave" for host in REDIS}
    for host in REDIS:
        if host != first:
            assert "master_link_status:up" in cli(host, "INFO", "replication")


def test_every_sentinel_names_the_same_master_and_can_fail_over() -> None:
    for host in REDIS:
        assert cli(host, "SENTINEL", "CKQUORUM", MASTER_NAME, port=26379).startswith("OK 3 usable")


def test_a_write_on_the_master_reaches_the_replicas() -> None:
    first = master()
    assert cli(first, "SET", "taskapp:ha-probe", "1") == "OK"
    for host in REDIS:
        if host != first:
            on(host).run("sleep 0.5")
            assert cli(host, "GET", "taskapp:ha-probe") == "1"
    cli(first, "DEL", "taskapp:ha-probe")


def test_the_master_refuses_writes_without_a_replica_in_sync() -> None:
    first = master()
    settings = cli(first, "CONFIG", "GET", "min-replicas-*").splitlines()
    assert dict(zip(settings[::2], settings[1::2], strict=True)) == {
        "min-replicas-to-write": "1",
        "min-replicas-max-lag": "10",
    }


def test_a_replica_is_read_only() -> None:
    replica = next(host for host in REDIS if host != master())
    assert "READONLY" in cli(replica, "SET", "taskapp:ha-probe", "1")


def test_sentinel_refuses_a_client_without_credentials() -> None:
    assert "NOAUTH" in cli(REDIS[0], "PING", port=26379, user="")


def test_the_celery_user_may_only_ask_sentinel_where_the_master_is() -> None:
    own = {"user": "celery", "password": CELERY_PASSWORD, "port": 26379}
    assert cli(REDIS[1], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME, **own).count(".") == 3
    assert "NOPERM" in cli(REDIS[1], "SENTINEL", "FAILOVER", MASTER_NAME, **own)
    assert "NOPERM" in cli(REDIS[1], "SENTINEL", "SET", MASTER_NAME, "quorum", "1", **own)


def test_the_replication_and_sentinel_users_cannot_read_the_queues() -> None:
    for user in ("replication", "sentinel"):
        password = str(GROUP_VARS[f"redis_acl_{user}_password"])
        answer = cli(REDIS[0], "LRANGE", "taskapp:celery", "0", "-1", user=user, password=password)
        assert "NOPERM" in answer


def test_the_workers_are_configured_with_the_sentinels() -> None:
    config = on(WORKER).file("/etc/taskapp/config.toml").content_string
    assert "[redis.sentinel]" in config
    assert '"mol-ha-redis1", "mol-ha-redis2", "mol-ha-redis3"' in config.replace("\n", " ")
