"""Rotating every ACL user's password without a gap (README, Rotating secrets), under a stream
of tasks from plain Celery producers and of fresh logins, as clients outside the bundle make them.

The two steps, run as an operator runs them (the vault's variables given as extra vars, which
outrank the inventory): step 1, the new passwords current and the old ones as `_previous`:
Redis takes both (ACL LOAD, no restart) and the workers roll onto the new ones; the clients then
switch; step 2, the `_previous` entries gone: the old passwords are refused. Counted from the
clients' side: every task sent completed, no login was refused, no send failed, no worker
logged a refused login. The figures go to build/password-rotation.json.

The test then puts back the files converge left (the aclfile, the workers' configuration) and
applies them, and the last test deploys with the scenario's own inventory: changed=0 proves the
hosts are as converge left them for the tests after these.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
import testinfra
import yaml
from celery import Celery
from conftest import (
    BROKER_PORT,
    CONTROLLER_PORT,
    PKI,
    REPO,
    RESULTS_CONTROLLER_PORT,
    RESULTS_PORT,
    WORKER,
    Secrets,
    cli,
    deploy,
    worker_host,
)

from testkit import recap

testinfra_hosts = ["redis"]
PREFIX = "taskapp:"
QUEUE = "celery"
USERS = ("admin", "celery", "monitor")
SERVERS = ("redis-server", "redis-server@results")
# The rotated passwords: throwaway test secrets, like the scenario's own.
NEW = Secrets(
    admin="secure-test-only-rotated-admin-4e1d7a",
    celery="secure-test-only-rotated-celery-b93c05",
    monitor="secure-test-only-rotated-monitor-2f68e1",
)
VAULT = {
    "admin": "vault_redis_password",
    "celery": "vault_redis_celery_password",
    "monitor": "vault_redis_monitor_password",
}
TLS = {
    "ssl_cert_reqs": ssl.CERT_REQUIRED,
    "ssl_ca_certs": str(PKI / "ca.crt"),
    "ssl_certfile": str(PKI / f"{WORKER}.crt"),
    "ssl_keyfile": str(PKI / f"{WORKER}.key"),
}
FIGURES = REPO / "build/password-rotation.json"
# Where each host keeps, for the length of the test, the files converge left (/etc/redis on
# the Redis host, /etc/taskapp on the worker host): the test puts them back at its end.
BACKUP = "/root/password-rotation-backup"
# What a worker logs when Redis refuses its login (redis-py's words, Redis's own).
REFUSED_LOGIN = re.compile(r"WRONGPASS|invalid username-password|AuthenticationError|NOAUTH")


def login(user: str, password: str) -> redis.Connection:
    """A new connection to the broker's server through the published port: TLS, AUTH, HELLO."""
    conn = redis.SSLConnection(
        host="127.0.0.1",
        port=CONTROLLER_PORT,
        username=user,
        password=password,
        socket_timeout=5,
        **TLS,
    )
    conn.connect()
    return conn


def refused(user: str, password: str) -> bool:
    try:
        login(user, password).disconnect()
    except redis.AuthenticationError:
        return True
    return False


def producer(password: str) -> Celery:
    """A producer the way a user's own process builds one: stock Celery and kombu, the Celery
    user, mutual TLS, the key prefix; Celery's default publish retry and connection pool."""
    app = Celery(
        "rotation-producer",
        broker=f"rediss://celery:{quote(password, safe='')}@127.0.0.1:{CONTROLLER_PORT}/0",
    )
    app.conf.broker_use_ssl = TLS
    app.conf.broker_transport_options = {"global_keyprefix": PREFIX}
    return app


class Clients:
    """Plain Celery producers sending a task every 0.1 s, and a client logging in afresh as each
    user every 0.2 s, with the passwords they were last given (switch)."""

    def __init__(self, passwords: Secrets) -> None:
        self.passwords = passwords
        self.app = producer(passwords.celery)
        self.sent: list[str] = []
        self.send_errors: list[str] = []
        self.logins = 0
        self.refused: list[str] = []
        self.dropped: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._login, daemon=True),
        ]

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        self.app.close()

    def switch(self, passwords: Secrets) -> None:
        """Give every client the other passwords, as an operator does between the two steps."""
        old, self.app = self.app, producer(passwords.celery)
        self.passwords = passwords
        time.sleep(1)  # a send under way on the old app finishes
        old.close()

    def _send(self) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                result = self.app.send_task("taskapp.ping", queue=QUEUE)
                self.sent.append(result.id)
            except Exception as error:  # a send the broker did not take: counted, reported
                self.send_errors.append(f"{i}: {error!r}")
            i += 1
            self._stop.wait(0.1)

    def _login(self) -> None:
        while not self._stop.is_set():
            passwords = asdict(self.passwords)
            for user in USERS:
                self.logins += 1
                try:
                    conn = login(user, passwords[user])
                except redis.AuthenticationError as error:  # the password refused
                    self.refused.append(f"{user}: {error!r}")
                    continue
                except (redis.ConnectionError, OSError) as error:
                    # Closed mid-login by an ACL LOAD (Redis 7.0 closes every ACL user's
                    # connection at a reload): a drop, not a refusal (a clean run met one).
                    self.dropped.append(f"{user}: {error!r}")
                    continue
                try:  # logged in; Redis 7.0's ACL LOAD may close it before the PING
                    conn.send_command("PING")
                    conn.read_response()
                except (redis.ConnectionError, OSError) as error:
                    self.dropped.append(f"{user}: {error!r}")
                finally:
                    conn.disconnect()
            self._stop.wait(0.2)


def unfinished(task_ids: list[str], password: str, timeout: float = 180) -> list[str]:
    """The tasks whose result the workers have not stored as a success, after waiting."""
    results = redis.Redis(
        "127.0.0.1",
        RESULTS_CONTROLLER_PORT,
        db=1,
        username="celery",
        password=password,
        ssl=True,
        decode_responses=True,
        **TLS,
    )
    left = list(task_ids)
    deadline = time.monotonic() + timeout
    try:
        while left and time.monotonic() < deadline:
            values = results.mget([f"{PREFIX}celery-task-meta-{i}" for i in left])
            left = [i for i, v in zip(left, values, strict=True) if not v or '"SUCCESS"' not in v]
            if left:
                time.sleep(1)
    finally:
        results.close()
    return left


def changed_tasks(stdout: str) -> list[str]:
    blocks = re.split(r"^(?=TASK \[)", stdout, flags=re.M)
    return [block.strip()[:300] for block in blocks if re.search(r"^changed: ", block, re.M)]


def rotation_vars(tmp: Path, name: str, current: Secrets, previous: Secrets | None) -> str:
    """The vault's entries for one step, as an -e @FILE argument."""
    values = {VAULT[user]: getattr(current, user) for user in USERS}
    if previous is not None:
        values |= {f"{VAULT[user]}_previous": getattr(previous, user) for user in USERS}
    path = tmp / f"{name}.yml"
    path.write_text(yaml.safe_dump(values))
    return f"-e@{path}"


def run_step(*args: str) -> subprocess.CompletedProcess[str]:
    proc = deploy(*args)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc


def passwords_of(host: testinfra.host.Host, admin: str) -> dict[str, int]:
    """How many passwords (hashes) each user has in the running broker's server."""
    counts = {}
    for user in USERS:
        out = cli(host, "acl", "getuser", user, user="admin", password=admin).splitlines()
        hashes = out[out.index("passwords") + 1 :]
        counts[user] = len([h for h in hashes if re.fullmatch(r"[0-9a-f]{64}", h)])
    return counts


def invocations(host: testinfra.host.Host) -> list[str]:
    return [host.check_output(f"systemctl show -p InvocationID --value {unit}") for unit in SERVERS]


@pytest.fixture(scope="module")
def figures() -> Iterator[dict[str, Any]]:
    found: dict[str, Any] = {}
    yield found
    FIGURES.parent.mkdir(exist_ok=True)
    FIGURES.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")


def backup(host: testinfra.host.Host, directory: str) -> None:
    host.check_output(f"rm -rf {BACKUP} && mkdir -p {BACKUP} && cp -a {directory}/. {BACKUP}/")


def restore(redis_host: testinfra.host.Host, admin_passwords: list[str]) -> None:
    """Put back the files the rotation changed, as converge left them, and apply them: the
    users reloaded (as admin, with whichever password Redis takes now), the workers restarted
    on their configuration. The next test's deploy proves nothing else moved (changed=0)."""
    redis_host.check_output(f"cp -a {BACKUP}/. /etc/redis/")
    for port in (BROKER_PORT, RESULTS_PORT):
        answers = [
            cli(redis_host, "acl", "load", user="admin", password=p, port=port)
            for p in admin_passwords
        ]
        assert "OK" in answers, answers
    worker = worker_host()
    worker.check_output(f"cp -a {BACKUP}/. /etc/taskapp/")
    worker.check_output("systemctl restart 'celery-worker@*'")


def test_passwords_rotate_without_a_gap(
    host: testinfra.host.Host,
    secrets: Secrets,
    tmp_path: Path,
    figures: dict[str, Any],
) -> None:
    old = secrets
    assert cli(host, "acl", "log", "reset", user="admin", password=old.admin) == "OK"
    backup(host, "/etc/redis")
    backup(worker_host(), "/etc/taskapp")
    servers_before = invocations(host)
    since = worker_host().check_output("date +%s")
    started = time.monotonic()
    try:
        with Clients(old) as clients:
            time.sleep(3)
            # Step 1: Redis takes both passwords, the workers move to the new one.
            step1 = run_step(rotation_vars(tmp_path, "step1", NEW, old))
            both = passwords_of(host, NEW.admin)
            clients.switch(NEW)
            # Step 2: the old passwords are refused; nothing restarts.
            step2 = run_step(rotation_vars(tmp_path, "step2", NEW, None))
            time.sleep(3)
        one = passwords_of(host, NEW.admin)
        # Redis's own count of refusals, before the probes below add theirs.
        acl_log = cli(host, "acl", "log", user="admin", password=NEW.admin)
        old_refused = {user: refused(user, getattr(old, user)) for user in USERS}
        new_refused = {user: refused(user, getattr(NEW, user)) for user in USERS}
        lost = unfinished(clients.sent, NEW.celery)
        journal = worker_host().check_output(
            f"journalctl -u 'celery-*' --since @{since} --no-pager -o cat"
        )
    finally:
        restore(host, [NEW.admin, old.admin])
    worker_refusals = [line for line in journal.splitlines() if REFUSED_LOGIN.search(line)]
    figures.update(
        tasks_sent=len(clients.sent),
        tasks_lost=len(lost),
        send_errors=len(clients.send_errors),
        logins=clients.logins,
        logins_refused=len(clients.refused),
        connections_dropped_after_login=len(clients.dropped),
        worker_logins_refused=len(worker_refusals),
        seconds=round(time.monotonic() - started, 1),
    )
    print(json.dumps(figures, sort_keys=True))
    # Counted from the clients' side: nothing lost, nothing refused.
    assert clients.sent, "no task was sent"
    assert lost == [], f"{len(lost)} of {len(clients.sent)} tasks never completed"
    assert clients.send_errors == [], clients.send_errors[:10]
    assert clients.refused == [], clients.refused[:10]
    assert worker_refusals == [], worker_refusals[:10]
    assert acl_log == "", acl_log[:2000]
    # What each step did: two passwords, then one; the old ones refused, the new ones taken;
    # ACL LOAD, never a restart of Redis; step 2 restarted no worker.
    assert both == dict.fromkeys(USERS, 2), both
    assert one == dict.fromkeys(USERS, 1), one
    assert old_refused == dict.fromkeys(USERS, True), "an old password still works"
    assert new_refused == dict.fromkeys(USERS, False), "a new password is refused"
    assert invocations(host) == servers_before
    assert recap(step1.stdout)[WORKER]["changed"] > 0, "step 1 did not move the workers"
    assert recap(step2.stdout)[WORKER]["changed"] == 0, changed_tasks(step2.stdout)


def test_the_scenario_is_back_as_converge_left_it() -> None:
    proc = deploy()
    assert proc.returncode == 0, proc.stdout[-3000:]
    counts = recap(proc.stdout)
    assert counts, proc.stdout[-3000:]
    assert all(c["changed"] == 0 for c in counts.values()), changed_tasks(proc.stdout)
