"""The ha scenario's verify step: the group's servers and Sentinels, and a producer of the
user's kind (plain Celery, the Sentinels and credentials given by hand) on the worker host."""

from __future__ import annotations

import contextlib
import itertools
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
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
# It sends COUNT taskapp.ping tasks and waits for each result (its get() with a timeout, then
# the stored state, as the README's "Redis restarts" tells producers); prints what came back.
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
        result.get(timeout=30)
        done += 1
    except Exception as exc:
        # As the README tells producers: a result stored while Celery's result consumer
        # reconnects is never announced to get(); read the stored state once.
        if result.state == "SUCCESS":
            done += 1
        else:
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


def without(node: object, hosts: set[str]) -> object:
    """Molecule's inventory (NODE) with HOSTS removed from every group."""
    if isinstance(node, dict):
        return {
            key: without(value, hosts)
            for key, value in node.items()
            if not (isinstance(key, str) and key in hosts)
        }
    return node


def one_host_inventory(into: Path) -> Path:
    """The scenario's inventory with the group's first host only, in INTO: the inventory a
    user had before growing the group."""
    source = molecule_inventory()
    data = yaml.safe_load((source / "ansible_inventory.yml").read_text())
    (into / "ansible_inventory.yml").write_text(yaml.safe_dump(without(data, set(REDIS[1:]))))
    for link in ("group_vars", "host_vars"):
        (into / link).symlink_to((source / link).resolve())
    return into


# The bundle's producer: the workers' own config (Sentinels, TLS, durable publish, or the
# publish's replicas given as a fourth argument), one record_work task per idempotency key
# every 0.1 s, until its time is up or OUT.stop exists; what each send answered, as JSON.
STREAM = r"""
import json, sys, time
from pathlib import Path
from celery import Celery
from rcbundle.config import celery_config, load_settings
seconds, label, out = float(sys.argv[1]), sys.argv[2], sys.argv[3]
app = Celery("stream")
app.config_from_object(celery_config(load_settings(Path("/etc/taskapp/config.toml"))))
if len(sys.argv) > 4:  # the durable publish's replicas, other than the config's
    options = dict(app.conf.broker_transport_options)
    app.conf.broker_transport_options = options | {"rcbundle_publish_replicas": int(sys.argv[4])}
sends, end, i = [], time.time() + seconds, 0
while time.time() < end and not Path(out + ".stop").exists():
    key, at = f"{label}-{i}", time.time()
    try:
        app.send_task("taskapp.record_work", args=[key], kwargs={"label": label},
                      ignore_result=True)
        sends.append([key, at, None])
    except Exception as exc:
        sends.append([key, at, f"{type(exc).__name__}: {exc}"[:200]])
    i += 1
    time.sleep(0.1)
Path(out + ".part").write_text(json.dumps(sends))
Path(out + ".part").rename(out)
"""


def wait_for(what: str, check: Callable[[], bool], seconds: float) -> None:
    """CHECK true within SECONDS (asked every second), else an AssertionError naming WHAT."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"{what}: not within {seconds} s")


def worker_pids() -> str:
    return str(on(WORKER).run("systemctl show -p MainPID --value 'celery-worker@*'").stdout)


def executions(label: str) -> list[dict[str, object]]:
    """record_work's entries for LABEL, read on the current master (result database 1)."""
    key = f"taskapp:taskapp-executions:{label}"
    lines = cli(master(), "-n", "1", "LRANGE", key, "0", "-1").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def start_stream(seconds: float, replicas: int | None = None) -> tuple[str, str]:
    """The bundle's producer sending for SECONDS in the background on the worker host (its
    durable publish waiting for REPLICAS, when given, rather than the config's): its label
    (the tasks' record list) and the file its sends go to."""
    label = f"stream-{time.time_ns()}"
    out = f"/tmp/{label}.json"
    extra = [] if replicas is None else [str(replicas)]
    stream = shlex.join([PYTHON, "-c", STREAM, str(seconds), label, out, *extra])
    on(WORKER).run(f"nohup {stream} >/tmp/{label}.log 2>&1 &")
    return label, out


def finish_stream(label: str, out: str, seconds: float, since: float) -> dict[str, object]:
    """What the stream's sends answered and what ran, once every accepted task ran (or two
    minutes passed): sent, accepted, refused, lost, run twice, and the first task done after
    SINCE (a time.time())."""
    wait_for("the stream's end", lambda: on(WORKER).file(out).exists, seconds + 120)
    sends = json.loads(on(WORKER).file(out).content_string)
    accepted = {key for key, _, error in sends if error is None}
    refused = [error for _, _, error in sends if error is not None]

    def runs() -> dict[str, set[object]]:
        found: dict[str, set[object]] = {}
        for entry in executions(label):
            if entry["phase"] == "done":
                found.setdefault(str(entry["key"]), set()).add(entry["execution"])
        return found

    with contextlib.suppress(AssertionError):
        wait_for("every accepted task run", lambda: accepted <= runs().keys(), 120)
    ran = runs()
    done_at = [float(str(e["at"])) for e in executions(label) if e["phase"] == "done"]
    later = [at for at in done_at if at > since]
    return {
        "tasks_sent": len(sends),
        "tasks_accepted": len(accepted),
        "sends_refused": len(refused),
        "tasks_lost": len(accepted - ran.keys()),
        "tasks_run_twice": sum(1 for key in accepted if len(ran.get(key, ())) > 1),
        "first_task_after_seconds": round(min(later) - since, 1) if later else None,
        "refusals": sorted(set(refused))[:3],
    }


def run_ids() -> dict[str, str]:
    """Each server's run_id: a new one means the server restarted."""
    return {
        host: next(
            line.split(":", 1)[1]
            for line in cli(host, "INFO", "server").splitlines()
            if line.startswith("run_id:")
        )
        for host in REDIS
    }


def wait_promoted(old: str, old_address: str, since: float) -> float:
    """Seconds from SINCE until every Sentinel but OLD's names a master other than OLD (at
    OLD_ADDRESS, read before the fault: a paused host runs no command)."""
    others = [host for host in REDIS if host != old]
    wait_for(
        "a replica promoted",
        lambda: all(master_address(host) not in ("", old_address) for host in others),
        60,
    )
    return time.time() - since


# The stream runs until the deploy is over (its OUT.stop file), at most this long.
ROLLING_STREAM_SECONDS = 1200


def healthy() -> bool:
    """Every replica linked to the master, every Sentinel naming it."""
    now = master()
    linked = all(
        "master_link_status:up" in cli(host, "INFO", "replication") for host in REDIS if host != now
    )
    return linked and all(master_address(host) == address(now) for host in REDIS)


def rolling_deploy(*args: str) -> dict[str, object]:
    """A deploy with ARGS under a task stream: the stream's figures, the deploy's own, and
    which servers restarted and where the master went."""
    old, before, pids = master(), run_ids(), worker_pids()
    label, out = start_stream(ROLLING_STREAM_SECONDS)
    time.sleep(5)
    started = time.time()
    run = deploy(*args)
    deploy_seconds = time.time() - started
    time.sleep(5)
    on(WORKER).run(f"touch {out}.stop")
    figures = finish_stream(label, out, 10, started)
    sends = json.loads(on(WORKER).file(out).content_string)
    after = run_ids()
    return figures | {
        # The longest a send waited (the stream sends every 0.1 s): the switchover's pause.
        "longest_send_seconds": round(
            max((b[1] - a[1] for a, b in itertools.pairwise(sends)), default=0.0) - 0.1,
            1,
        ),
        "deploy_rc": run.returncode,
        "deploy_seconds": round(deploy_seconds, 1),
        "servers_restarted": sum(1 for host in REDIS if after[host] != before[host]),
        "master_before": old,
        "master_after": master(),
        "worker_restarted": worker_pids() != pids,
        "deploy_tail": run.stdout[-30000:] if run.returncode else "",
    }


FIGURES = REPO / "build/failover.json"


def record_figures(fault: str, figures: dict[str, object]) -> None:
    """FIGURES with FAULT's entry (re)written and the other faults' kept (RELIABILITY.md:
    `python -m chaos --failover build/failover.json`)."""
    FIGURES.parent.mkdir(exist_ok=True)
    known = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    FIGURES.write_text(json.dumps(known | {fault: figures}, indent=2) + "\n")


EXPERIMENTS = REPO / "build/ha-experiments.json"


def record_experiment(name: str, figures: dict[str, object]) -> None:
    """EXPERIMENTS with NAME's entry (re)written and the others kept (RELIABILITY.md:
    `python -m chaos --ha-experiments build/ha-experiments.json`)."""
    EXPERIMENTS.parent.mkdir(exist_ok=True)
    known = json.loads(EXPERIMENTS.read_text()) if EXPERIMENTS.exists() else {}
    EXPERIMENTS.write_text(json.dumps(known | {name: figures}, indent=2) + "\n")


# The modules in the order they change the group: the group as converged first, then the
# replicas frozen and thawed, then the failovers (which move the master for good), then the
# rolling restarts (which move it again). `make chaos-ha` runs the modules marked
# `experiment` instead (molecule.yml's `-m`): the migration from one host (on hosts Molecule
# created but did not converge), then the repeated faults; `make bench-ha` the one marked
# `bench`.
ORDER = [
    "test_group",
    "test_ca",
    "test_durable_publish",
    "test_failover",
    "test_isolation",
    "test_rolling_restart",
    "test_rotation",
    "test_migration",
    "test_experiments",
    "test_bench",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "experiment: make chaos-ha's, not make test's")
    config.addinivalue_line("markers", "bench: make bench-ha's, not make test's")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the modules in ORDER (each module's own tests keep their order)."""
    items.sort(key=lambda item: ORDER.index(item.path.stem))
