"""`make bench`: the configurations of issue 6 side by side on the bench lab.

Brings up (or reuses) the lab of bench/inventory, then, for each repetition,
runs every configuration in a rotated order so that a slow moment of this
shared machine falls on all of them alike:

- stock: Celery as its docs run it (bench/stock_app.py): one node, prefork,
  one process per vCPU, stock settings, results on, against a plain Redis;
- bundle: the units deploy.yml installed (hardened: ACL, TLS, AOF, sandbox);
- unhardened: the same worker nodes and arguments, started without the
  systemd sandbox, against a Redis with requirepass only (no ACL, TLS, AOF);
- raw: redis-py BRPOP (+ SETEX) consumers, as many processes as the bundle's,
  and redis-benchmark for Redis itself;
- plain-producer: the bundle's workers again, in the bundle's turn, fed by a
  producer with kombu's own Redis transport and the bundle's settings.

The plain Redis (port 6380) and the stock and unhardened workers are
transient systemd units the harness starts on the lab's hosts; the bundle's
own units are stopped while they run. Writes bench/results.json and
BENCHMARKS.md (bench/report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench import report
from testkit.controller import toml_text

REPO = Path(__file__).resolve().parents[1]
INVENTORY = REPO / "bench/inventory"
HA_RESULTS = REPO / "bench/ha-results.json"  # make bench-ha's, published by --publish-ha
LAB = {
    "LAB_NAME": "bench",
    "LAB_INVENTORY": str(INVENTORY.relative_to(REPO)),
    "LAB_REDIS_PORT": "16385",
    "LAB_SMOKE": "0",
}
REDIS = "bench-redis1"
WORKER = "bench-worker1"
PLAIN_PORT = 6380
PY = "/opt/taskapp/current/venv/bin/python"
CELERY = "/opt/taskapp/current/venv/bin/celery"
BENCH_DIR = "/opt/bench"
UNHARDENED_CONFIG = f"{BENCH_DIR}/unhardened.toml"
BUNDLE_CONFIG = "/etc/taskapp/config.toml"


@dataclass(frozen=True)
class Sizes:
    reps: int = 3
    trivial: int = 4000
    burn: int = 400
    latency: int = 300
    load_rate: float = 200.0
    raw: int = 20000
    queued: int = 10000


QUICK = Sizes(reps=1, trivial=200, burn=40, latency=20, load_rate=50.0, raw=500, queued=500)


def run(argv: Sequence[str], *, check: bool = True, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        list(argv), capture_output=True, text=True, check=False, env=env, timeout=900
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def on(host: str, *argv: str, check: bool = True) -> str:
    return run(["podman", "exec", host, *argv], check=check)


@dataclass
class Lab:
    """The lab's hosts, secrets and the bundle's worker nodes as deployed."""

    password: str
    monitor_password: str
    nodes: list[str] = field(default_factory=list)
    node_args: dict[str, list[str]] = field(default_factory=dict)
    # What a node needs besides its arguments (the solo nodes' pool module and where it is).
    node_env: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def processes(self) -> int:
        """Pool processes of all the bundle's nodes together."""
        return sum(
            int(args[args.index("--concurrency") + 1]) if "--concurrency" in args else 1
            for args in self.node_args.values()
        )

    @property
    def plain_url(self) -> str:
        return f"redis://:{self.password}@{REDIS}:{PLAIN_PORT}"

    def client(
        self, *argv: str, stock: bool = False, unhardened: bool = False, plain: bool = False
    ) -> dict[str, Any]:
        where = ["--stock-url", self.plain_url] if stock else []
        if unhardened:
            where = ["--config", UNHARDENED_CONFIG]
        if plain:
            where = [*where, "--plain"]
        out = on(WORKER, PY, f"{BENCH_DIR}/client.py", *where, *argv)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result


def load_lab(deploy: bool) -> Lab:
    env = {**os.environ, **LAB}
    running = run(["podman", "ps", "--format", "{{.Names}}"]).split()
    if deploy or not {REDIS, WORKER} <= set(running):
        print("bench: bringing up the lab (scripts/lab.sh up)", flush=True)
        run([str(REPO / "scripts/lab.sh"), "up"], env=env)
    vault = yaml.safe_load((INVENTORY / "group_vars/all/vault.yml").read_text())
    lab = Lab(vault["vault_redis_password"], vault["vault_redis_monitor_password"])
    units = on(WORKER, "ls", "/etc/systemd/system").split()
    names = [u.removeprefix("celery-worker@").removesuffix(".service.d") for u in units]
    lab.nodes = sorted(
        (n for n, u in zip(names, units, strict=True) if u.endswith(".service.d")),
        key=lambda n: (len(n), n),
    )
    for node in lab.nodes:
        env_line = on(WORKER, "systemctl", "show", "-p", "Environment", "--value", unit(node))
        env = dict(w.split("=", 1) for w in shlex.split(env_line))
        lab.node_args[node] = env["WORKER_ARGS"].split()
        lab.node_env[node] = {k: env[k] for k in POOL_ENV if k in env}
    return lab


# The unit's environment a node's pool needs (solo nodes: rcbundle.solo, the custom pool).
POOL_ENV = ("CELERY_CUSTOM_WORKER_POOL",)
# What the units' celery.env gives every node besides its config file: rcbundle's loader.
LOADER_ENV = {"CELERY_LOADER": "rcbundle.loader:Loader"}


def with_pool(args: Sequence[str], pool: str, concurrency: int = 1) -> list[str]:
    """The node's arguments with another pool and concurrency."""
    out = list(args)
    out[out.index("--pool") + 1] = pool
    out[out.index("--concurrency") + 1] = str(concurrency)
    return out


def unit(node: str) -> str:
    return f"celery-worker@{node}.service"


def prepare(lab: Lab) -> None:
    """Copy the client, start the plain Redis, write the unhardened app config."""
    on(WORKER, "mkdir", "-p", BENCH_DIR)
    for name in ("client.py", "stock_app.py"):
        run(["podman", "cp", str(REPO / "bench" / name), f"{WORKER}:{BENCH_DIR}/{name}"])
    on(WORKER, "chmod", "-R", "a+rX", BENCH_DIR)
    if on(REDIS, "systemctl", "is-active", "bench-plain-redis", check=False).strip() != "active":
        on(REDIS, "systemctl", "reset-failed", "bench-plain-redis", check=False)
        on(
            REDIS,
            "systemd-run",
            "--unit",
            "bench-plain-redis",
            "--uid",
            "redis",
            "-p",
            "WorkingDirectory=/tmp",
            "/usr/bin/redis-server",
            "--port",
            str(PLAIN_PORT),
            "--bind",
            "0.0.0.0",
            "--requirepass",
            lab.password,
            "--appendonly",
            "no",
            "--save",
            "",
            "--dir",
            "/tmp",
        )
    # The unhardened configuration runs the bundle's workers, which wake on the keyspace events
    # the redis role turns on: a Redis setting of the deployment, not part of its hardening.
    # (Stock's workers ignore them.) Set live, so a plain Redis left by an earlier run has it too.
    on(REDIS, "redis-cli", "--no-auth-warning", "-p", str(PLAIN_PORT), "-a", lab.password,
       "config", "set", "notify-keyspace-events", "Kl")  # fmt: skip
    text = unhardened_config(on(WORKER, "cat", BUNDLE_CONFIG), REDIS, PLAIN_PORT, lab.password)
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as local:
        local.write(text)
        local.flush()
        run(["podman", "cp", local.name, f"{WORKER}:{UNHARDENED_CONFIG}"])
    on(WORKER, "chmod", "0644", UNHARDENED_CONFIG)


def unhardened_config(bundle_config: str, host: str, port: int, password: str) -> str:
    """The bundle's app config (TOML text) with its Redis tables pointed at the unhardened
    Redis: host, port and password only (no ACL user, no TLS, no separate results server)."""
    data = tomllib.loads(bundle_config)
    data["redis"] = {"host": host, "port": port, "password": password}
    return toml_text(data)


def stop_workers() -> None:
    on(WORKER, "systemctl", "stop", "celery-worker@*", "bench-*", check=False)
    on(WORKER, "systemctl", "reset-failed", "bench-*", check=False)


def worker_command(node: str, args: Sequence[str]) -> list[str]:
    """The bundle's app as a worker node outside its unit (no sandbox), with its arguments."""
    return [CELERY, "--app", "taskapp.app:app", "worker", "--hostname", f"{node}@{WORKER}",
            "--loglevel", "INFO", *args]  # fmt: skip


def transient(name: str, env: dict[str, str], argv: Sequence[str]) -> None:
    props = ["-p", "KillMode=mixed", "-p", f"WorkingDirectory={BENCH_DIR}"]
    for key, value in env.items():
        props += ["-E", f"{key}={value}"]
    on(WORKER, "systemd-run", "--unit", name, "--uid", "taskapp", "--gid", "taskapp", *props, *argv)


def main_pids(units: Sequence[str]) -> str:
    pids = [on(WORKER, "systemctl", "show", "-p", "MainPID", "--value", u).strip() for u in units]
    return ",".join(pids)


@dataclass(frozen=True)
class Config:
    """One way to run the workers: which units, how the client reaches Redis."""

    name: str
    stock: bool = False
    unhardened: bool = False
    one_process: bool = False
    one_node: bool = False
    prefork_nodes: bool = False

    def start(self, lab: Lab) -> list[str]:
        stop_workers()
        units: list[str]
        if self.stock:
            cmd = [CELERY, "-A", "stock_app", "worker", "--loglevel", "INFO"]
            if self.one_process:
                cmd += ["--concurrency", "1"]
            transient(
                "bench-stock", {"PYTHONPATH": BENCH_DIR, "BENCH_STOCK_URL": lab.plain_url}, cmd
            )
            units = ["bench-stock.service"]
        elif self.unhardened:
            units = []
            for node in lab.nodes:
                cmd = worker_command(node, lab.node_args[node])
                env = {"RCBUNDLE_CONFIG": UNHARDENED_CONFIG, **LOADER_ENV, **lab.node_env[node]}
                transient(f"bench-unhardened-{node}", env, cmd)
                units.append(f"bench-unhardened-{node}.service")
        elif self.prefork_nodes:
            # The same nodes, each a prefork pool of one process (the role's previous `short`).
            units = []
            for node in lab.nodes:
                cmd = worker_command(node, with_pool(lab.node_args[node], "prefork"))
                env = {"RCBUNDLE_CONFIG": BUNDLE_CONFIG, **LOADER_ENV}
                transient(f"bench-prefork-{node}", env, cmd)
                units.append(f"bench-prefork-{node}.service")
        elif self.one_node:
            # The same processes as one prefork node (what `kind: long` deploys).
            args = with_pool(lab.node_args[lab.nodes[0]], "prefork", lab.processes)
            cmd = worker_command("default", args)
            transient("bench-onenode", {"RCBUNDLE_CONFIG": BUNDLE_CONFIG, **LOADER_ENV}, cmd)
            units = ["bench-onenode.service"]
        else:
            units = [unit(n) for n in (lab.nodes[:1] if self.one_process else lab.nodes)]
            on(WORKER, "systemctl", "start", *units)
        self.client(lab, "ready", "--expect", str(len(units)))
        return units

    def client(self, lab: Lab, *argv: str, plain: bool = False) -> dict[str, Any]:
        return lab.client(*argv, stock=self.stock, unhardened=self.unhardened, plain=plain)


STOCK = Config("stock", stock=True)
BUNDLE = Config("bundle")
UNHARDENED = Config("unhardened", unhardened=True)
STOCK_ONE = Config("stock-1", stock=True, one_process=True)
BUNDLE_ONE = Config("bundle-1", one_process=True)
ONE_NODE = Config("one-node", one_node=True)
PREFORK_NODES = Config("prefork-nodes", prefork_nodes=True)


def rotate(items: Sequence[Config], by: int) -> list[Config]:
    by %= len(items)
    return [*items[by:], *items[:by]]


def redis_benchmark(lab: Lab, quick: bool) -> dict[str, float]:
    n = "2000" if quick else "100000"
    out = on(
        REDIS,
        "redis-benchmark",
        "-h",
        "127.0.0.1",
        "-p",
        str(PLAIN_PORT),
        "-a",
        lab.password,
        "-n",
        n,
        "-t",
        "ping,set,lpush,rpop",
        "--csv",
    )
    rates: dict[str, float] = {}
    for line in out.splitlines()[1:]:
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) >= 2:
            rates[cells[0]] = float(cells[1])
    return rates


def plain_producer(lab: Lab, sizes: Sizes, rep: int, pids: str, nodes: int) -> dict[str, Any]:
    """The bundle's workers as they run, fed by a plain producer (client.py --plain: kombu's own
    Redis transport, the bundle's settings): in the bundle's turn of the rotation, right after
    the bundle's own producer, with the same sizes."""
    print(f"bench: rep {rep + 1}/{sizes.reps} plain-producer", flush=True)
    trivial = ["drain", "--n", str(sizes.trivial), "--pids", pids]
    return {
        "rep": rep,
        "config": "plain-producer",
        "workers": BUNDLE.name,
        "nodes": nodes,
        "trivial": BUNDLE.client(lab, *trivial, plain=True),
        "trivial_results": BUNDLE.client(lab, *trivial, "--results", plain=True),
        "latency_idle": BUNDLE.client(lab, "latency", "--n", str(sizes.latency), plain=True),
    }


def measure(lab: Lab, sizes: Sizes) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    processes = lab.processes
    for rep in range(sizes.reps):
        configs = [STOCK, BUNDLE, UNHARDENED, PREFORK_NODES, ONE_NODE, STOCK_ONE, BUNDLE_ONE]
        for config in rotate(configs, rep):
            units = config.start(lab)
            pids = main_pids(units)
            record: dict[str, Any] = {"rep": rep, "config": config.name, "nodes": len(units)}
            print(f"bench: rep {rep + 1}/{sizes.reps} {config.name}", flush=True)
            record["burn"] = config.client(
                lab, "drain", "--task", "taskapp.burn", "--n", str(sizes.burn), "--pids", pids
            )
            if not config.one_process:
                trivial = ["drain", "--n", str(sizes.trivial), "--pids", pids]
                record["trivial"] = config.client(lab, *trivial)
                record["trivial_results"] = config.client(lab, *trivial, "--results")
                record["latency_idle"] = config.client(lab, "latency", "--n", str(sizes.latency))
                record["latency_load"] = config.client(
                    lab,
                    "latency",
                    "--n",
                    str(sizes.latency),
                    "--load-rate",
                    str(sizes.load_rate),
                )
            runs.append(record)
            if config is BUNDLE:
                runs.append(plain_producer(lab, sizes, rep, pids, len(units)))
        stop_workers()
        print(f"bench: rep {rep + 1}/{sizes.reps} raw", flush=True)
        for results in (False, True):
            flag = ["--results"] if results else []
            raw = lab.client(
                "raw",
                "--raw-url",
                lab.plain_url,
                "--n",
                str(sizes.raw),
                "--processes",
                str(processes),
                *flag,
            )
            runs.append({"rep": rep, "config": "raw", "results": results, "raw": raw})
        runs.append(
            {"rep": rep, "config": "redis-benchmark", "rates": redis_benchmark(lab, sizes.reps < 2)}
        )
    memory = {}
    for config in (STOCK, BUNDLE):
        config.start(lab)
        info_url = (
            f"redis://:{lab.password}@{REDIS}:{PLAIN_PORT}/0"
            if config.stock
            else f"rediss://monitor:{lab.monitor_password}@{REDIS}:6379/0"
        )
        memory[config.name] = config.client(
            lab, "queued-memory", "--info-url", info_url, "--n", str(sizes.queued)
        )
    stop_workers()
    on(WORKER, "systemctl", "start", *[unit(n) for n in lab.nodes])
    return {"runs": runs, "queued_memory": memory, "consumer_processes": processes}


def machine(lab: Lab) -> dict[str, Any]:
    versions = json.loads(
        on(
            WORKER,
            PY,
            "-c",
            "import json, celery, kombu, redis, sys; print(json.dumps("
            "{'celery': celery.__version__, 'kombu': kombu.__version__, 'redis-py': "
            "redis.__version__, 'python (hosts)': sys.version.split()[0]}))",
        )
    )
    versions["redis-server"] = on(REDIS, "redis-server", "--version").split()[2].removeprefix("v=")
    versions["ansible-core"] = run(
        [sys.executable, "-c", "import ansible; print(ansible.__version__)"]
    ).strip()
    cpu = Path("/proc/cpuinfo").read_text()
    model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if "model name" in ln), "")
    return {
        "cpu": model,
        "vcpus": int(on(WORKER, "nproc").strip()),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "versions": versions,
        "bundle_nodes": {n: lab.node_args[n] for n in lab.nodes},
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run")
    parser.add_argument("--reps", type=int, default=Sizes.reps)
    parser.add_argument("--no-deploy", action="store_true", help="reuse the running lab as is")
    parser.add_argument("--results", type=Path, default=REPO / "bench/results.json")
    parser.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="no measuring: rewrite the results' summary and BENCHMARKS.md (after bench-deploy)",
    )
    parser.add_argument(
        "--publish-ha",
        type=Path,
        metavar="FILE",
        help="no measuring: publish make bench-ha's figures (build/bench-ha.json) into"
        " bench/ha-results.json and rewrite BENCHMARKS.md",
    )
    args = parser.parse_args(argv)
    if args.publish_ha:
        publish_ha(args.publish_ha)
    if args.render_only or args.publish_ha:
        write(json.loads(args.results.read_text()), args.results, args.markdown)
        return
    sizes = QUICK if args.quick else Sizes(reps=args.reps)
    lab = load_lab(deploy=not args.no_deploy)
    prepare(lab)
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    t0 = time.monotonic()
    data = measure(lab, sizes)
    data.update(
        date=started.isoformat(timespec="seconds"),
        duration_s=round(time.monotonic() - t0, 1),
        load_average={"before": load_before, "after": os.getloadavg()},
        sizes=sizes.__dict__,
        machine=machine(lab),
    )
    write(data, args.results, args.markdown)


def publish_ha(figures: Path) -> None:
    """make bench-ha's figures (build/bench-ha.json) into HA_RESULTS, dated, with the commit."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    published = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit or "unknown",
        "run": json.loads(figures.read_text()),
    }
    HA_RESULTS.write_text(json.dumps(published, indent=1) + "\n")


def write(data: dict[str, Any], results: Path, markdown: Path) -> None:
    """Summarize (with bench-deploy's results when present) and write both files."""
    deploy = REPO / "bench/deploy-results.json"
    if deploy.exists():
        data["deploy"] = json.loads(deploy.read_text())
    data["summary"] = report.summarize_run(data)
    results.write_text(json.dumps(data, indent=1) + "\n")
    text = report.markdown(data)
    if HA_RESULTS.exists():
        text = text.rstrip("\n") + "\n\n" + report.ha_markdown(json.loads(HA_RESULTS.read_text()))
    markdown.write_text(text)
    print(report.targets_text(data["summary"]))
    print(f"bench: wrote {results} and {markdown}")


if __name__ == "__main__":
    main()
