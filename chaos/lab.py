"""The chaos lab as the experiments see it: hosts to hurt, Redis to read, tasks to send."""

from __future__ import annotations

import importlib.metadata
import json
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from functools import cache
from typing import Any

import redis
import yaml
from celery import Celery

from chaos.accounting import Entry, never_completed, parse_entries
from rcbundle.config import Settings, celery_config, parse_settings
from taskapp.tasks import EXECUTIONS_KEY
from testkit import REPO, on, playbook, run
from testkit.controller import worker_config

INVENTORY = REPO / "chaos/inventory"
VAULT = INVENTORY / "group_vars/all/vault.yml"
# The bundle's own CA and certificates on the controller: the pki role's pki_dir at its
# default (redis_tls_source: bundle).
PKI = REPO / "build/pki"
NETWORK = "bundle-chaos"
REDIS_HOST = "chaos-redis1"
WORKERS = ("chaos-worker1", "chaos-worker2")
# Each worker node is its own systemd unit celery-worker@NAME, worker NAME@HOST: the default
# topology runs one solo node per vCPU (celery-worker@default, celery-worker@default-2 ...).
UNIT_PREFIX = "celery-worker@"
PORT = 16380  # chaos-redis1's 6379, published on the controller's loopback
TASK = "taskapp.record_work"


# The security modes the Redis experiments run in: extra variables over the chaos inventory
# (which is requirepass, plain TCP). The same switches a user sets in group_vars/all.
MODES: dict[str, dict[str, Any]] = {
    "requirepass": {},
    "acl+tls": {"redis_auth_mode": "acl", "redis_tls": True},
}


def deploy(*args: str, mode: str = "requirepass", timeout: float = 900) -> tuple[int, float, str]:
    """deploy.yml on the chaos inventory in a security mode: (exit code, seconds, output tail)."""
    began = time.monotonic()
    extra = ["-e", json.dumps(MODES[mode])] if MODES[mode] else []
    proc = playbook("deploy.yml", INVENTORY, *extra, *args, timeout=timeout)
    return proc.returncode, time.monotonic() - began, (proc.stdout + proc.stderr)[-3000:]


class Lab:
    """Handles on the running chaos lab in one security mode, built from the workers' own
    config file: Celery as the workers' user, Redis as the admin (who may read every key)."""

    def __init__(self, mode: str = "requirepass") -> None:
        self.mode = mode
        # The controller reaches Redis through the published port, with the same worker host's
        # certificate from the bundle's PKI.
        self.settings: Settings = parse_settings(worker_config(WORKERS[0], port=PORT, pki=PKI))
        r = self.settings.redis
        admin: dict[str, Any] = {
            "username": "admin" if r.username else None,
            "password": str(yaml.safe_load(VAULT.read_text())["vault_redis_password"]),
            "decode_responses": True,
        }
        if r.tls.enabled:
            admin.update(
                ssl=True,
                ssl_ca_certs=r.tls.ca_file,
                ssl_certfile=r.tls.cert_file,
                ssl_keyfile=r.tls.key_file,
            )
        self.broker = redis.Redis("127.0.0.1", PORT, db=r.broker_db, **admin)
        self.results = redis.Redis("127.0.0.1", PORT, db=r.result_db, **admin)

    def deploy(self, *args: str, timeout: float = 900) -> tuple[int, float, str]:
        """deploy.yml in this lab's security mode."""
        return deploy(*args, mode=self.mode, timeout=timeout)

    def celery(self) -> Celery:
        """A fresh producer app: nothing cached from a Redis that has since lost its keys."""
        return Celery("chaos", config_source=celery_config(self.settings))

    def executions_key(self, label: str) -> str:
        return f"{self.settings.redis.key_prefix}{EXECUTIONS_KEY}{label}"

    def entries(self, label: str) -> list[Entry]:
        raw: list[bytes | str] = self.results.lrange(self.executions_key(label), 0, -1)
        return parse_entries(raw)

    def queue_length(self, queue: str = "celery") -> int:
        return int(self.broker.llen(f"{self.settings.redis.key_prefix}{queue}"))

    def wait_queue_empty(self, timeout: float = 300) -> int:
        """Wait until an earlier experiment's backlog has run; what was left when giving up."""
        deadline = time.monotonic() + timeout
        while (left := self.queue_length()) and time.monotonic() < deadline:
            time.sleep(1)
        return left

    def wait_redis(self, timeout: float = 90) -> float:
        """Wait until Redis answers PING through the published port; the time it did."""
        deadline = time.monotonic() + timeout
        while True:
            with suppress(redis.RedisError):
                if self.broker.ping():
                    return time.time()
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis did not answer within {timeout}s")
            time.sleep(0.2)

    def wait_running(self, label: str, host: str, after: float, timeout: float) -> Entry | None:
        """Wait until host is in the middle of an execution it started after `after`: its start
        entry (the latest, if several nodes of the host are busy), or None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entries = self.entries(label)
            done = {e.execution for e in entries if e.phase == "done"}
            running = [
                e
                for e in entries
                if e.phase == "start"
                and e.host == host
                and e.at > after
                and e.execution not in done
            ]
            if running:
                return max(running, key=lambda e: e.at)
            time.sleep(0.2)
        return None

    def unacked_task_ids(self) -> set[str]:
        """Task ids of the messages in kombu's unacked hash: fetched, not yet acknowledged. A
        task counted lost that is there would come back only after the visibility timeout."""
        ids = set()
        for _, raw in self.broker.hscan_iter(f"{self.settings.redis.key_prefix}unacked"):
            with suppress(ValueError, KeyError, IndexError, TypeError):
                ids.add(str(json.loads(raw)[0]["headers"]["id"]))
        return ids

    def wait_done(self, label: str, keys: set[str], timeout: float) -> float:
        """Wait until every key has completed at least once; seconds waited."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            done = {e.key for e in self.entries(label) if e.phase == "done"}
            if keys <= done:
                break
            time.sleep(2)
        return time.monotonic() - began

    def processes_per_host(self) -> int:
        """Processes that run tasks on the first worker host: a solo node's own, or a prefork
        node's children (each host runs the same instances)."""
        out = on(
            WORKERS[0],
            "for u in $(systemctl list-units 'celery-worker@*' --state=running --plain "
            "--no-legend | cut -d' ' -f1); do p=$(systemctl show -p MainPID --value $u); "
            "n=$(pgrep -c -P $p); echo $((n > 0 ? n : 1)); done",
        )
        return sum(int(n) for n in out.split())

    # Faults and repairs -------------------------------------------------------------------

    def workers(self, action: str, hosts: tuple[str, ...] = WORKERS) -> None:
        """systemctl ACTION on every worker unit of the hosts (one call per host, so a host's
        units stop or start together)."""
        for host in hosts:
            on(host, f"systemctl {action} {' '.join(units(host))}", timeout=180)

    def heal(self) -> None:
        """Undo whatever an experiment that failed midway may have left behind."""
        for host in WORKERS:
            run("podman", "network", "connect", NETWORK, host, check=False)
            run("podman", "start", host, check=False)
        on(REDIS_HOST, "systemctl start redis-server", check=False)
        with suppress(TimeoutError):
            self.wait_redis(60)
        for host in WORKERS:
            names = " ".join(units(host))
            on(host, f"systemctl reset-failed {names}; systemctl start {names}", check=False)

    def versions(self) -> dict[str, str]:
        worker_py = "/opt/taskapp/current/venv/bin/python"
        code = "import celery, kombu, redis; print(celery.__version__, kombu.__version__, " + (
            "redis.__version__)"
        )
        w_celery, w_kombu, w_redis = on(WORKERS[0], f'{worker_py} -c "{code}"').split()
        info: dict[str, Any] = self.broker.info("server")
        return {
            "redis_server": str(info["redis_version"]),
            "worker_celery": w_celery,
            "worker_kombu": w_kombu,
            "worker_redis_py": w_redis,
            "worker_python": on(WORKERS[0], f"{worker_py} -V").split()[1],
            "controller_celery": importlib.metadata.version("celery"),
            "controller_kombu": importlib.metadata.version("kombu"),
            "controller_redis_py": importlib.metadata.version("redis"),
            "host_os": on(REDIS_HOST, ". /etc/os-release; echo $PRETTY_NAME").strip(),
            "podman": run("podman", "--version").split()[-1],
            "ansible_core": run(str(REPO / ".venv/bin/ansible"), "--version").split("\n")[0],
        }


@cache
def units(host: str) -> tuple[str, ...]:
    """The worker units the deploy put on host, one per node (their drop-in directories)."""
    out = on(host, f"cd /etc/systemd/system && ls -d {UNIT_PREFIX}*.service.d")
    names = tuple(sorted(d.removesuffix(".service.d") for d in out.split()))
    if not names:
        raise RuntimeError(f"no {UNIT_PREFIX}* unit on {host}")
    return names


def unit_of(worker: str) -> str:
    """`default-2@chaos-worker1` (a start entry's worker) -> `celery-worker@default-2`."""
    return UNIT_PREFIX + worker.rpartition("@")[0]


def kill_workers(host: str, names: Iterable[str] | None = None) -> float:
    """SIGKILL the main process and any pool children of the host's worker units (all of them,
    or those named) at once; the time it was done.

    systemd then restarts each unit (Restart=on-failure) after RestartSec (5 s). In these
    containers it is not told when a unit's cgroup empties, so a unit with processes left
    after its main process died would wait out TimeoutStopSec; a solo node (the default
    topology) has none, and every process here is killed in the same command.
    """
    # Not checked: a unit still restarting from the last kill has nothing to kill, and the
    # experiment counts such kills apart (it waits for a running task first).
    script = "; ".join(
        f"main=$(systemctl show -p MainPID --value {unit}); "
        f'[ "$main" != 0 ] && kill -KILL $main $(pgrep -P $main)'
        for unit in (units(host) if names is None else names)
    )
    on(host, script, check=False)
    return time.time()


def invocations(host: str) -> dict[str, str]:
    """Each worker unit's InvocationID: a new one after each start."""
    return {
        unit: on(host, f"systemctl show -p InvocationID --value {unit}").strip()
        for unit in units(host)
    }


class Flow:
    """A producer thread sending record_work tasks at a steady pace until stopped."""

    def __init__(
        self, app: Celery, label: str, seconds: float, interval: float, prefix: str = "k"
    ) -> None:
        self.app, self.label, self.seconds, self.interval = app, label, seconds, interval
        self.prefix = prefix
        self.accepted: dict[str, str] = {}  # key -> task id
        self.refused: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._n = 0

    def send(self, n: int = 1) -> None:
        """Send n tasks now, from the calling thread."""
        for _ in range(n):
            key = f"{self.prefix}-{self._n}"
            self._n += 1
            try:
                result = self.app.send_task(TASK, args=(key, self.seconds, self.label))
            except Exception as exc:  # every refusal is counted, whatever its kind
                self.refused.append(key)
                self.errors.append(f"{type(exc).__name__}: {exc}")
            else:
                self.accepted[key] = result.id

    def _run(self) -> None:
        while not self._stop.is_set():
            self.send()
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def lost_tasks(self, entries: list[Entry]) -> list[str]:
        """Key and task id of each accepted task that never completed: what to look up in the
        workers' journals and in kombu's unacked hash."""
        return [f"{key} {self.accepted[key]}" for key in never_completed(self.accepted, entries)]

    def failed(self) -> int:
        """Accepted tasks whose result says FAILURE."""
        states = [self.app.AsyncResult(task_id).state for task_id in self.accepted.values()]
        return states.count("FAILURE")


@contextmanager
def flowing(flow: Flow) -> Iterator[Flow]:
    flow.start()
    try:
        yield flow
    finally:
        flow.stop()
