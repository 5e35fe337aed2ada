"""ACL mode and the append-only file: a Redis restart neither loses writes nor revives tasks.

Redis 7.0 replays the AOF as the `default` user and re-checks ACL permissions at each EXEC
(redis/redis #14541): with `default` denied every command, every MULTI/EXEC block and every
multi-write script (logged as MULTI/EXEC) was dropped at load. Those are kombu's acks and the
transport's fetch, so each restart put every consumed task back on its queue. The tests run
from the controller as a user's own client would: redis-py and plain Celery, as the Celery
user, over mutual TLS, with no bundle code.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import redis
import testinfra
from celery import Celery
from conftest import CONTROLLER_PORT, PKI, WORKER, Secrets, worker_host

testinfra_hosts = ["redis"]
PREFIX = "taskapp:"
QUEUE = "celery"
TLS = {
    "ssl_cert_reqs": ssl.CERT_REQUIRED,
    "ssl_ca_certs": str(PKI / "ca.crt"),
    "ssl_certfile": str(PKI / f"{WORKER}.crt"),
    "ssl_keyfile": str(PKI / f"{WORKER}.key"),
}


def connect(user: str, password: str) -> redis.Redis:
    """The broker's database through the port molecule publishes, over mutual TLS."""
    return redis.Redis(
        "127.0.0.1",
        CONTROLLER_PORT,
        username=user,
        password=password,
        ssl=True,
        decode_responses=True,
        retry_on_error=[redis.ConnectionError],
        **TLS,
    )


@pytest.fixture
def broker(secrets: Secrets) -> Iterator[redis.Redis]:
    """As the Celery user: the writes a Celery app makes."""
    client = connect("celery", secrets.celery)
    yield client
    client.close()


@pytest.fixture
def admin(secrets: Secrets) -> Iterator[redis.Redis]:
    """As the admin user: the counts (the Celery user may not read kombu's unacked hash size)."""
    client = connect("admin", secrets.admin)
    yield client
    client.close()


def restart_redis(host: testinfra.host.Host, client: redis.Redis) -> None:
    """A graceful restart (Debian's unit), then wait until the broker answers again."""
    host.check_output("systemctl restart redis-server")
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.ping():
                return
        except (redis.ConnectionError, redis.BusyLoadingError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def test_transactions_and_scripts_survive_a_restart(
    host: testinfra.host.Host, broker: redis.Redis
) -> None:
    multi, script, single = (f"{PREFIX}aof-probe:{kind}" for kind in ("multi", "script", "single"))
    broker.delete(multi, script, single)
    with broker.pipeline(transaction=True) as pipe:
        pipe.lpush(multi, "a")
        pipe.lpush(multi, "b")
        pipe.execute()
    broker.eval("redis.call('lpush', KEYS[1], 'a'); redis.call('lpush', KEYS[1], 'b')", 1, script)
    broker.lpush(single, "a")

    restart_redis(host, broker)

    lengths = {key: broker.llen(key) for key in (multi, script, single)}
    broker.delete(multi, script, single)
    assert lengths == {multi: 2, script: 2, single: 1}
    # Redis itself says so when it refuses a replayed transaction: nothing of that in the log
    # of the process that just loaded the file.
    invocation = host.check_output("systemctl show -p InvocationID --value redis-server")
    journal = host.check_output(f"journalctl --no-pager _SYSTEMD_INVOCATION_ID={invocation}")
    assert "Ready to accept connections" in journal
    assert "AOF-loading-client" not in journal


def plain_celery(secrets: Secrets) -> Celery:
    """A producer the way a user's own process builds one: stock Celery and kombu."""
    password = quote(secrets.celery, safe="")
    app = Celery(
        "user-producer", broker=f"rediss://celery:{password}@127.0.0.1:{CONTROLLER_PORT}/0"
    )
    app.conf.broker_use_ssl = TLS
    app.conf.broker_transport_options = {"global_keyprefix": PREFIX}
    return app


def wait_drained(client: redis.Redis, timeout: float = 120) -> tuple[int, int]:
    """Wait until the queue and kombu's unacked hash are both empty; what was left."""
    deadline = time.monotonic() + timeout
    while True:
        left = client.llen(f"{PREFIX}{QUEUE}"), client.hlen(f"{PREFIX}unacked")
        if left == (0, 0) or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def test_consumed_tasks_do_not_come_back_after_a_restart(
    host: testinfra.host.Host, admin: redis.Redis, secrets: Secrets
) -> None:
    assert wait_drained(admin) == (0, 0), "the queue was not empty before the workload"
    app = plain_celery(secrets)
    try:
        for _ in range(100):
            app.send_task("taskapp.ping", queue=QUEUE, ignore_result=True)
    finally:
        app.close()
    # Consumed and acknowledged: nothing queued, nothing held by a worker.
    assert wait_drained(admin) == (0, 0)

    # Workers stopped, as an operator would for maintenance: a revived message must stay
    # where the count below sees it, not be fetched again first.
    worker = worker_host()
    units = worker.check_output(
        "systemctl list-units 'celery-worker@*' --state=running --plain --no-legend"
        " | awk '{print $1}'"
    ).split()
    assert units, "no worker unit was running"
    worker.check_output(f"systemctl stop {' '.join(units)}")
    try:
        restart_redis(host, admin)
        left = admin.llen(f"{PREFIX}{QUEUE}"), admin.hlen(f"{PREFIX}unacked")
    finally:
        worker.check_output(f"systemctl start {' '.join(units)}")
    assert left == (0, 0), f"consumed tasks came back after a restart (queue, unacked): {left}"
