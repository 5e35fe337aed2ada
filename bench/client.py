"""The load side of `make bench`, run on the worker host with the release's Python.

The harness (bench/harness.py) copies this file to the host and runs one
subcommand at a time through `podman exec`; each prints one JSON object.
Throughput is measured by draining a pre-filled queue: the workers stop
consuming (cancel_consumer), N tasks are published, and the clock runs from
add_consumer until the queue and kombu's unacked set are empty, so the
producer's own speed never limits the figure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis
from celery import Celery

QUEUE = "celery"


def stock_app(url: str) -> Celery:
    """The bundled tasks with Celery's stock settings, as its first-steps guide configures."""
    # Imported here: the app's config source must be replaced before anything reads it.
    import taskapp.tasks  # noqa: F401  # registers the tasks on app
    from taskapp.app import app

    app.config_from_object({"broker_url": url + "/0", "result_backend": url + "/1"}, force=True)
    return app


def bundle_app(config: str) -> Celery:
    import taskapp.tasks  # noqa: F401  # registers the tasks on app
    from rcbundle import configure
    from taskapp.app import app

    return configure(app, Path(config))


def plain_app(config: str) -> Celery:
    """A plain producer: the bundle's settings on kombu's stock Redis transport.

    The same broker URL (rediss://, the ACL user), TLS files, key prefix, routes and
    serializers as rcbundle.configure gives, without its `broker_transport`: what a client
    sends tasks with that copies the deployed settings and runs no rcbundle code (rcbundle only
    reads the config file here; nothing of it publishes or fetches).
    """
    import taskapp.tasks  # noqa: F401  # registers the tasks on app
    from rcbundle.config import celery_config, load_settings
    from taskapp.app import app

    conf = celery_config(load_settings(Path(config)))
    if conf.pop("broker_transport", None) is None:
        raise SystemExit("rcbundle's settings name no broker_transport: nothing to take out")
    app.config_from_object(conf, force=True)
    if transport_name(app).startswith("rcbundle"):
        raise SystemExit(f"the plain producer runs {transport_name(app)}, not kombu's own")
    return app


def transport_name(app: Celery) -> str:
    """The broker transport class the app publishes with (module:class); connects nothing."""
    with app.connection_for_write() as conn:
        cls = type(conn.transport)
        return f"{cls.__module__}:{cls.__qualname__}"


def make_app(args: argparse.Namespace) -> Celery:
    if args.stock_url:
        return stock_app(args.stock_url)
    return plain_app(args.config) if args.plain else bundle_app(args.config)


def broker_client(app: Celery) -> redis.Redis:
    """kombu's own client on the broker database: it adds the key prefix itself."""
    with app.connection_for_write() as conn:
        client: redis.Redis = conn.default_channel.client  # type: ignore[attr-defined]
        return client


def pending(client: redis.Redis) -> int:
    """Tasks queued, plus 1 if any is delivered and not yet acknowledged (0: all done).

    Only commands kombu's client prefixes (LLEN, ZRANGE) and the ACL allows.
    """
    pipe = client.pipeline(transaction=False)
    pipe.llen(QUEUE)
    pipe.zrange("unacked_index", 0, 0)
    queued, unacked = pipe.execute()
    return int(queued) + len(unacked)


def rss_kib(pids: Sequence[int]) -> int:
    """Resident memory of each process and all its descendants, summed (KiB)."""
    seen: set[int] = set()
    todo = list(pids)
    total = 0
    while todo:
        pid = todo.pop()
        if pid in seen or pid <= 0:
            continue
        seen.add(pid)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total += int(match.group(1)) if match else 0
    return total


def cpu_ticks() -> tuple[int, int]:
    """Busy and total CPU ticks of the whole machine, all cores (a container's /proc/stat is the
    host's): how much of the machine a run kept busy, whoever was busy."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields[:8]) - idle, sum(fields[:8])  # user .. steal; guest is inside user


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    busy, total = after[0] - before[0], after[1] - before[1]
    return busy / total if total > 0 else 0.0


def drain(args: argparse.Namespace) -> dict[str, Any]:
    app = make_app(args)
    task = app.tasks[args.task]
    client = broker_client(app)
    control = app.control
    control.cancel_consumer(QUEUE, reply=True, timeout=1)
    client.delete(QUEUE)
    if pending(client):
        raise SystemExit(f"queue not empty before the run: {pending(client)} pending")
    task_args = (args.rounds,) if args.task == "taskapp.burn" else ()
    started = time.perf_counter()
    ids = []
    with app.producer_or_acquire() as producer:
        for _ in range(args.n):
            result = task.apply_async(
                task_args, queue=QUEUE, ignore_result=not args.results, producer=producer
            )
            ids.append(result.id)
    publish_s = time.perf_counter() - started
    pids = [int(p) for p in args.pids.split(",") if p] if args.pids else []
    idle_rss = {str(p): rss_kib([p]) for p in pids}
    peak_rss = dict(idle_rss)
    t0 = time.perf_counter()
    ticks = cpu_ticks()
    # No reply: waiting for replies would wait out the whole broadcast timeout.
    control.add_consumer(QUEUE)
    deadline = t0 + args.timeout
    samples = 0
    while pending(client):
        if time.perf_counter() > deadline:
            raise SystemExit(f"timed out with {pending(client)} tasks pending")
        if pids and samples % 20 == 0:
            for p in pids:
                peak_rss[str(p)] = max(peak_rss[str(p)], rss_kib([p]))
        samples += 1
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    cpu_busy = busy_share(ticks, cpu_ticks())
    stored = 0
    if args.results:
        # Not timed: every task must have stored its result (the last few may still be writing).
        options = app.conf.result_backend_transport_options or {}
        key = str(options.get("global_keyprefix", "")) + "celery-task-meta-"
        backend = app.backend.client  # type: ignore[attr-defined]
        for _ in range(200):
            pipe = backend.pipeline(transaction=False)
            for i in ids:
                pipe.exists(key + i)
            stored = sum(int(x) for x in pipe.execute())
            if stored == len(ids):
                break
            time.sleep(0.05)
        if stored != len(ids):
            raise SystemExit(f"only {stored} of {len(ids)} results stored")
    return {
        "n": args.n,
        "transport": transport_name(app),
        "seconds": elapsed,
        "tasks_per_s": args.n / elapsed,
        "publish_per_s": args.n / publish_s,
        "cpu_busy": cpu_busy,
        "results_stored": stored,
        "rss_idle_kib": idle_rss,
        "rss_load_kib": peak_rss,
    }


def ready(args: argparse.Namespace) -> dict[str, Any]:
    """Wait until args.expect worker nodes answer a ping, and no more."""
    app = make_app(args)
    deadline = time.perf_counter() + args.timeout
    names: list[str] = []
    while time.perf_counter() < deadline:
        names = sorted(name for reply in app.control.ping(timeout=0.5) or [] for name in reply)
        if len(names) == args.expect:
            return {"nodes": names}
        time.sleep(0.5)
    raise SystemExit(f"expected {args.expect} worker nodes, {len(names)} answer: {names}")


def _load(url_or_config: tuple[str, str], rate: float, stop_at: float) -> None:
    kind, value = url_or_config
    apps = {"stock": stock_app, "plain": plain_app, "bundle": bundle_app}
    app = apps[kind](value)
    task = app.tasks["taskapp.ping"]
    interval = 1.0 / rate
    next_at = time.perf_counter()
    with app.producer_or_acquire() as producer:
        while (now := time.perf_counter()) < stop_at:
            if now < next_at:
                time.sleep(next_at - now)
            task.apply_async(queue=QUEUE, ignore_result=True, producer=producer)
            next_at += interval


def latency(args: argparse.Namespace) -> dict[str, Any]:
    app = make_app(args)
    task = app.tasks["taskapp.ping"]
    client = broker_client(app)
    task.delay().get(timeout=10)  # connections and the result subscription warmed up
    loader = None
    if args.load_rate:
        if args.stock_url:
            source = ("stock", args.stock_url)
        else:
            source = ("plain" if args.plain else "bundle", args.config)
        stop_at = time.perf_counter() + 600
        loader = multiprocessing.Process(target=_load, args=(source, args.load_rate, stop_at))
        loader.start()
        time.sleep(1.0)  # the load reaches its rate before sampling starts
    samples_ms = []
    try:
        for _ in range(args.n):
            t = time.perf_counter()
            task.delay().get(timeout=10)
            samples_ms.append((time.perf_counter() - t) * 1000)
    finally:
        if loader is not None:
            loader.terminate()
            loader.join()
    backlog = pending(client)
    deadline = time.perf_counter() + 30
    while pending(client) and time.perf_counter() < deadline:
        time.sleep(0.05)
    return {
        "n": args.n,
        "samples_ms": samples_ms,
        "max_ms": max(samples_ms, default=0.0),
        "load_rate": args.load_rate,
        "backlog": backlog,
        "transport": transport_name(app),
    }


def _raw_consumer(
    url: str,
    results: bool,
    ready: multiprocessing.synchronize.Semaphore,
    go: multiprocessing.synchronize.Event,
    out: multiprocessing.queues.Queue[tuple[int, float]],
) -> None:
    client = redis.Redis.from_url(url)
    client.ping()
    ready.release()
    go.wait()
    done = 0
    last = time.perf_counter()
    while True:
        item = client.brpop(["raw"], timeout=0.3)
        if item is None:
            break
        if results:
            message_id = item[1] if isinstance(item[1], str) else item[1].decode()
            client.setex("raw-result:" + message_id, 3600, b'{"status":"SUCCESS"}')
        done += 1
        last = time.perf_counter()
    out.put((done, last))


def raw(args: argparse.Namespace) -> dict[str, Any]:
    """A minimal queue, the ceiling for any Python consumer: LPUSH, BRPOP (+ SETEX)."""
    client = redis.Redis.from_url(args.raw_url)
    client.delete("raw")
    pipe = client.pipeline(transaction=False)
    for i in range(args.n):
        pipe.lpush("raw", json.dumps({"id": str(i), "task": "ping", "args": []}))
    pipe.execute()
    ctx = multiprocessing.get_context("fork")
    ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_raw_consumer, args=(args.raw_url, args.results, ready, go, out))
        for _ in range(args.processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    t0 = time.perf_counter()
    go.set()
    finished = [out.get(timeout=args.timeout) for _ in procs]
    for p in procs:
        p.join()
    done = sum(d for d, _ in finished)
    elapsed = max(last for _, last in finished) - t0
    keys = list(client.scan_iter("raw-result:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    if done != args.n:
        raise SystemExit(f"raw queue: {done} of {args.n} consumed")
    return {"n": args.n, "seconds": elapsed, "tasks_per_s": args.n / elapsed}


def queued_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Redis used_memory growth for args.n queued tasks (workers not consuming)."""
    app = make_app(args)
    client = broker_client(app)
    info = redis.Redis.from_url(args.info_url, **_tls_kwargs(app))
    app.control.cancel_consumer(QUEUE, reply=True, timeout=1)
    client.delete(QUEUE)
    time.sleep(0.2)
    before = int(info.info("memory")["used_memory"])
    task = app.tasks["taskapp.ping"]
    with app.producer_or_acquire() as producer:
        for _ in range(args.n):
            task.apply_async(queue=QUEUE, ignore_result=True, producer=producer)
    after = int(info.info("memory")["used_memory"])
    queued = int(client.llen(QUEUE))
    client.delete(QUEUE)
    app.control.add_consumer(QUEUE)
    return {"n": args.n, "queued": queued, "used_memory_delta": after - before}


def _tls_kwargs(app: Celery) -> dict[str, Any]:
    ssl = app.conf.broker_use_ssl
    if not ssl:
        return {}
    return {
        "ssl_ca_certs": ssl["ssl_ca_certs"],
        "ssl_certfile": ssl["ssl_certfile"],
        "ssl_keyfile": ssl["ssl_keyfile"],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="/etc/taskapp/config.toml")
    parser.add_argument("--stock-url", default="", help="redis://:PASSWORD@HOST:PORT (stock)")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="with --config: a plain producer (kombu's stock Redis transport, no rcbundle)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {}

    p = sub.add_parser("drain")
    p.add_argument("--task", default="taskapp.ping")
    p.add_argument("--rounds", type=int, default=9000)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--results", action="store_true")
    p.add_argument("--pids", default="", help="worker main PIDs whose RSS to sample")
    p.add_argument("--timeout", type=float, default=300)
    commands["drain"] = drain

    p = sub.add_parser("ready")
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60)
    commands["ready"] = ready

    p = sub.add_parser("latency")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--load-rate", type=float, default=0.0, help="background tasks/s")
    commands["latency"] = latency

    p = sub.add_parser("raw")
    p.add_argument("--raw-url", required=True)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--results", action="store_true")
    p.add_argument("--timeout", type=float, default=300)
    commands["raw"] = raw

    p = sub.add_parser("queued-memory")
    p.add_argument("--info-url", required=True)
    p.add_argument("--n", type=int, default=10000)
    commands["queued-memory"] = queued_memory

    args = parser.parse_args(argv)
    if args.plain and args.stock_url:
        parser.error("--plain is the bundle side's producer; it does not go with --stock-url")
    json.dump(commands[args.command](args), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
