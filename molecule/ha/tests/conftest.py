"""The ha scenario's verify step: the group's servers and Sentinels, and a producer of the
user's kind (plain Celery, the Sentinels and credentials given by hand) on the worker host."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra
import yaml

SCENARIO = Path(__file__).resolve().parents[1]
REPO = SCENARIO.parents[1]
sys.path.insert(0, str(REPO))
from testkit import molecule_inventory, playbook  # noqa: E402  (needs the repository's root)

REDIS = ["mol-ha-redis1", "mol-ha-redis2", "mol-ha-redis3"]
WORKER = "mol-ha-worker1"
MASTER_NAME = "bundle"
TLS_DIR = "/etc/redis/tls"
GROUP_VARS = yaml.safe_load((SCENARIO / "inventory/group_vars/redis.yml").read_text())
ADMIN_PASSWORD = str(
    yaml.safe_load((REPO / "inventories/lab/group_vars/all/vault.yml").read_text())[
        "vault_redis_password"
    ]
)
CELERY_PASSWORD = str(GROUP_VARS["vault_redis_celery_password"])
PYTHON = "/opt/taskapp/current/venv/bin/python"

# A user's producer: plain Celery and kombu's own Sentinel transport (none of the bundle's
# code), the Sentinels, TLS files and the Celery user's password as a user would write them.
# It sends COUNT taskapp.ping tasks and waits for each result; prints what came back.
PRODUCER = r"""
import json, ssl, sys, time
from celery import Celery
from redis.backoff import NoBackoff
from redis.retry import Retry
count, password = int(sys.argv[1]), sys.argv[2]
tls = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/etc/taskapp/tls/ca.crt",
       "ssl_certfile": "/etc/taskapp/tls/client.crt", "ssl_keyfile": "/etc/taskapp/tls/client.key"}
sentinels = ["mol-ha-redis1", "mol-ha-redis2", "mol-ha-redis3"]
def url(db):
    return ";".join(f"sentinel://celery:{password}@{h}:26379/{db}" for h in sentinels)
options = {"master_name": "bundle", "global_keyprefix": "taskapp:",
           "sentinel_kwargs": {"username": "celery", "password": password, "ssl": True,
                               "socket_timeout": 2, "socket_connect_timeout": 2,
                               "retry": Retry(NoBackoff(), 0), **tls}}
app = Celery("producer", broker=url(0), backend=url(1))
app.conf.update(broker_use_ssl=tls, redis_backend_use_ssl=tls,
                broker_transport_options=options, result_backend_transport_options=options,
                broker_connection_retry_on_startup=True)
started = time.monotonic()
results, errors = [], []
for _ in range(count):
    try:
        results.append(app.send_task("taskapp.ping"))
    except Exception as exc:
        errors.append(f"send: {type(exc).__module__}.{type(exc).__name__}: {exc}"[:300])
done = 0
for result in results:
    try:
        result.get(timeout=60)
        done += 1
    except Exception as exc:
        errors.append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}"[:300])
print(json.dumps({"sent": count, "done": done, "errors": errors[:5],
                  "seconds": round(time.monotonic() - started, 2)}))
"""


def on(name: str) -> testinfra.host.Host:
    return testinfra.get_host(f"podman://{name}")


def cli(host: str, *args: str, port: int = 6379, user: str = "admin", password: str = "") -> str:
    """redis-cli on HOST against its own server (or Sentinel, with port=26379), over TLS with
    the host's certificate; stdout and stderr together, never raising."""
    argv = ["redis-cli", "--no-auth-warning", "-h", "127.0.0.1", "-p", str(port), "--tls"]
    argv += ["--cacert", f"{TLS_DIR}/ca.crt", "--cert", f"{TLS_DIR}/redis.crt"]
    argv += ["--key", f"{TLS_DIR}/redis.key"]
    if user:
        argv += ["--user", user]
    secret = password or (ADMIN_PASSWORD if user == "admin" else "")
    auth = f"REDISCLI_AUTH={shlex.quote(secret)} " if secret else ""
    return str(on(host).run(auth + shlex.join(argv + list(args)) + " 2>&1").stdout).strip()


def master_address(sentinel_host: str) -> str:
    """The master's address as SENTINEL_HOST's Sentinel reports it ("" when it cannot say)."""
    answer = cli(sentinel_host, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME, port=26379)
    lines = answer.splitlines()
    return lines[0] if len(lines) == 2 else ""


def address(host: str) -> str:
    """HOST's address on the scenario's network ("" when it runs no command: paused)."""
    words = str(on(host).run("hostname -I").stdout).split()
    return words[0] if words else ""


def master() -> str:
    """The group's host Sentinel names the master, asked of the first Sentinel that answers."""
    for sentinel in REDIS:
        found = master_address(sentinel)
        for host in REDIS:
            if found and address(host) == found:
                return host
    raise AssertionError("no Sentinel names a master of the group")


def produce(count: int) -> dict[str, object]:
    """COUNT tasks sent and waited for by the user's producer on the worker host."""
    command = shlex.join([PYTHON, "-c", PRODUCER, str(count), CELERY_PASSWORD])
    result = on(WORKER).run(command)
    assert result.rc == 0, result.stdout + result.stderr
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def deploy(*args: str) -> subprocess.CompletedProcess[str]:
    """ansible-playbook deploy.yml against the scenario's inventory (as molecule wrote it)."""
    return playbook("deploy.yml", molecule_inventory(), *args, timeout=900)


# The modules in the order they change the group: the group as converged first, then the
# replicas frozen and thawed, then the failovers (which move the master for good).
ORDER = ["test_group", "test_durable_publish", "test_failover", "test_isolation"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the modules in ORDER (each module's own tests keep their order)."""
    items.sort(key=lambda item: ORDER.index(item.path.stem))
