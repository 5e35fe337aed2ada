"""Turns the harness's raw runs into summaries, target verdicts and BENCHMARKS.md."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from bench.stats import Summary, Target, latency_summary, ratio, summarize

THROUGHPUT = ("trivial", "trivial_results", "burn")
CONFIGS = ("stock", "bundle", "unhardened", "prefork-nodes", "one-node", "stock-1", "bundle-1")
# The configurations with latency and memory figures (the CPU-only ones have neither).
FULL_CONFIGS = CONFIGS[:5]
# The bundle's workers fed by a producer on kombu's own Redis transport (client.py --plain).
PLAIN = "plain-producer"
# Its targets against stock, measured in the same run: latency at most this times stock's...
PLAIN_LATENCY_BOUND = 1.2
# ...and throughput at least this times stock's.
PLAIN_THROUGHPUT_BOUND = 1.0


def _runs(data: dict[str, Any], config: str) -> list[dict[str, Any]]:
    return [r for r in data["runs"] if r["config"] == config]


def _rate(data: dict[str, Any], config: str, workload: str) -> dict[int, float]:
    return {r["rep"]: r[workload]["tasks_per_s"] for r in _runs(data, config) if workload in r}


def _raw(data: dict[str, Any], results: bool) -> dict[int, float]:
    return {
        r["rep"]: r["raw"]["tasks_per_s"] for r in _runs(data, "raw") if r["results"] is results
    }


def paired_ratio(top: dict[int, float], bottom: dict[int, float]) -> Summary:
    """Median and spread of the per-repetition ratios (both measured in the same repetition)."""
    reps = sorted(set(top) & set(bottom))
    if not reps:
        raise ValueError("no repetition measured both sides")
    return summarize([ratio(top[r], bottom[r]) for r in reps])


def _mib(values: Iterable[int]) -> float:
    return round(statistics.median(values) / 1024, 1)


def summarize_run(data: dict[str, Any]) -> dict[str, Any]:
    throughput = {
        config: {
            w: summarize(list(v.values())).as_dict()
            for w in THROUGHPUT
            if (v := _rate(data, config, w))
        }
        for config in CONFIGS
    }
    # Older results have no CPU figures; a configuration without them is left out.
    cpu_busy = {
        config: {
            w: statistics.median(shares)
            for w in THROUGHPUT
            if (
                shares := [
                    r[w]["cpu_busy"] for r in _runs(data, config) if "cpu_busy" in r.get(w, {})
                ]
            )
        }
        for config in CONFIGS
    }
    raw = {
        "brpop": summarize(list(_raw(data, False).values())).as_dict(),
        "brpop_setex": summarize(list(_raw(data, True).values())).as_dict(),
    }
    benchmark: dict[str, list[float]] = {}
    for r in _runs(data, "redis-benchmark"):
        for test, rate in r["rates"].items():
            benchmark.setdefault(test, []).append(rate)
    latency: dict[str, dict[str, dict[str, float]]] = {}
    memory: dict[str, dict[str, float]] = {}
    for config in FULL_CONFIGS:
        runs = _runs(data, config)
        if not runs:
            continue
        latency[config] = {
            mode: latency_summary([s for r in runs for s in r[f"latency_{mode}"]["samples_ms"]])
            for mode in ("idle", "load")
        }
        idle = [v for r in runs for v in r["trivial_results"]["rss_idle_kib"].values()]
        idle += [v for r in runs for v in r["trivial"]["rss_idle_kib"].values()]
        load = [v for r in runs for v in r["trivial"]["rss_load_kib"].values()]
        if idle and load:
            memory[config] = {
                "nodes": runs[0]["nodes"],
                "idle_mib": _mib(idle),
                "load_mib": _mib(load),
            }
    queued = {
        config: round(m["used_memory_delta"] * 10000 / m["queued"])
        for config, m in data["queued_memory"].items()
        if m["queued"]
    }

    def base(other: str, w: str) -> dict[int, float]:
        return _raw(data, w == "trivial_results") if other == "raw" else _rate(data, other, w)

    # Each ratio pairs the bundle's drains with another configuration's, repetition by
    # repetition; the raw queue is the ceiling, and the 1-process runs the CPU scaling's base.
    ratios = {
        f"bundle_vs_{other.replace('-', '_')}_{w}": paired_ratio(
            _rate(data, "bundle", w), base(other, w)
        )
        for other in ("stock", "unhardened", "raw", "prefork-nodes", "one-node")
        for w in ("trivial", "trivial_results")
    }
    for config in ("bundle", "stock"):
        ratios[f"{config}_cpu_scaling"] = paired_ratio(
            _rate(data, config, "burn"), _rate(data, f"{config}-1", "burn")
        )
    summary: dict[str, Any] = {
        "throughput": throughput,
        "cpu_busy": {config: shares for config, shares in cpu_busy.items() if shares},
        "raw": raw,
        "redis_benchmark": {t: summarize(v).as_dict() for t, v in benchmark.items()},
        "latency_ms": latency,
        "rss_per_node": memory,
        "used_memory_per_10k_queued": queued,
        "ratios": {k: v.as_dict() for k, v in ratios.items()},
    }
    summary["targets"] = [t.as_dict() for t in targets(summary, data.get("deploy"))]
    plain = plain_producer(data)
    if plain:
        summary["plain_producer"] = plain
    return summary


def plain_producer(data: dict[str, Any]) -> dict[str, Any] | None:
    """A plain producer's figures beside stock's and the bundle producer's, and its targets.

    None for a run without plain-producer runs (results from before it was measured).
    Latency: every repetition's idle samples pooled, as the latency table does, and the ratio
    of the pooled percentiles. Throughput: median of repetitions, and the median of the
    per-repetition ratios to stock (both measured in the same repetition).
    """
    if not _runs(data, PLAIN) or not _runs(data, "stock"):
        return None
    producers = {"stock": "stock", "bundle": "bundle", "plain": PLAIN}
    latency = {
        name: latency_summary([s for r in _runs(data, c) for s in r["latency_idle"]["samples_ms"]])
        for name, c in producers.items()
        if _runs(data, c)
    }
    throughput = {
        name: {
            w: summarize(list(v.values())).as_dict()
            for w in ("trivial", "trivial_results")
            if (v := _rate(data, c, w))
        }
        for name, c in producers.items()
        if _runs(data, c)
    }
    ratios: dict[str, dict[str, float]] = {
        f"latency_{p}": {"median": ratio(latency["plain"][p], latency["stock"][p])}
        for p in ("p50", "p99", "max")
    }
    for w in ("trivial", "trivial_results"):
        ratios[w] = paired_ratio(_rate(data, PLAIN, w), _rate(data, "stock", w)).as_dict()
    found = [
        Target(
            f"Plain producer / Stock, idle latency {p}",
            ratios[f"latency_{p}"]["median"],
            PLAIN_LATENCY_BOUND,
            False,
            "x",
        )
        for p in ("p50", "p99")
    ]
    found += [
        Target(
            f"Plain producer / Stock, trivial tasks {what}",
            ratios[w]["median"],
            PLAIN_THROUGHPUT_BOUND,
            True,
            "x",
        )
        for w, what in (("trivial", "without results"), ("trivial_results", "with results"))
    ]
    # What each producer's client said it published with (older results do not say).
    transports: dict[str, list[str]] = {}
    for name, c in producers.items():
        seen = {
            r[k]["transport"]
            for r in _runs(data, c)
            for k in ("trivial", "trivial_results", "latency_idle")
            if "transport" in r.get(k, {})
        }
        if seen:
            transports[name] = sorted(seen)
    return {
        "latency_idle_ms": latency,
        "throughput": throughput,
        "ratios": ratios,
        "transports": transports,
        "targets": [t.as_dict() for t in found],
    }


def targets(summary: dict[str, Any], deploy: dict[str, Any] | None) -> list[Target]:
    r = summary["ratios"]
    lat = summary["latency_ms"]
    out = [
        Target(
            "Bundle defaults / Stock, trivial tasks with results",
            r["bundle_vs_stock_trivial_results"]["median"],
            2.0,
            True,
            "x",
        ),
        Target(
            "Bundle defaults / Stock, trivial tasks without results",
            r["bundle_vs_stock_trivial"]["median"],
            2.0,
            True,
            "x",
        ),
        Target(
            "Hardening cost (1 - Bundle / unhardened), with results",
            1 - r["bundle_vs_unhardened_trivial_results"]["median"],
            0.10,
            False,
        ),
        Target(
            "Hardening cost (1 - Bundle / unhardened), without results",
            1 - r["bundle_vs_unhardened_trivial"]["median"],
            0.10,
            False,
        ),
        Target(
            "Bundle / raw ceiling (BRPOP+SETEX), with results",
            r["bundle_vs_raw_trivial_results"]["median"],
            0.35,
            True,
        ),
        Target(
            "Bundle / raw ceiling (BRPOP), without results",
            r["bundle_vs_raw_trivial"]["median"],
            0.35,
            True,
        ),
        Target("Latency at idle, p50", lat["bundle"]["idle"]["p50"], 1.5, False, " ms"),
        Target("Latency at idle, p99", lat["bundle"]["idle"]["p99"], 3.0, False, " ms"),
        Target(
            "Latency at idle, p99 vs Stock's p99",
            lat["bundle"]["idle"]["p99"],
            lat["stock"]["idle"]["p99"],
            False,
            " ms",
        ),
        Target(
            "CPU-bound task, vCPUs processes / 1 process",
            r["bundle_cpu_scaling"]["median"],
            1.8,
            True,
            "x",
        ),
    ]
    if deploy and "ratios" in deploy:
        ratios = deploy["ratios"]
        out.append(
            Target(
                "Idempotent re-run, bundle ansible.cfg / Ansible defaults",
                ratios["rerun_bundle_vs_defaults"],
                0.4,
                False,
                "x",
            )
        )
    return out


def targets_text(summary: dict[str, Any]) -> str:
    lines = []
    for t in [*summary["targets"], *summary.get("plain_producer", {}).get("targets", [])]:
        target = Target(t["name"], t["value"], t["bound"], t["at_least"], t["unit"])
        lines.append(f"- {t['name']}: {target.describe()}")
    return "\n".join(lines)


def _targets_table(found: Iterable[dict[str, Any]]) -> list[str]:
    out = ["| target | measured | bound | verdict |", "| --- | --- | --- | --- |"]
    for t in found:
        sign = ">=" if t["at_least"] else "<="
        verdict = "met" if t["met"] else f"**not met**, off by {t['shortfall']:.0%}"
        measured = f"{t['value']:.3g}{t['unit']}"
        bound = f"{sign} {t['bound']:.3g}{t['unit']}"
        out.append(f"| {t['name']} | {measured} | {bound} | {verdict} |")
    return out


def plain_producer_markdown(p: dict[str, Any]) -> list[str]:
    """The plain producer's table beside stock's and the bundle producer's, and its targets."""
    labels = {
        "stock": "stock (stock producer, stock workers)",
        "bundle": "bundle producer (rcbundle.transport), bundle workers",
        "plain": "**plain producer** (kombu's Redis transport), bundle workers",
    }
    out = [
        "## Plain producer",
        "",
        "A producer with no bundle code on its message path (`bench/client.py --plain`: the",
        "bundle's settings, that is its rediss:// URL with the ACL user, TLS files, key prefix,",
        "routes and serializers, on kombu's own Redis transport, without `broker_transport`)",
        "sends to the bundle's workers, in the bundle's turn of every repetition, right after",
        "the bundle's own producer. Idle latency: all repetitions' samples pooled; throughput:",
        "drains as in the throughput table, median of repetitions (min-max).",
        "",
        "| producer, workers | idle p50 (ms) | idle p99 (ms) | idle max (ms) | "
        "trivial, no results (tasks/s) | trivial, results (tasks/s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, label in labels.items():
        lat, tp = p["latency_idle_ms"].get(name), p["throughput"].get(name, {})
        cells = [f"{lat['p50']:.2f}", f"{lat['p99']:.2f}", f"{lat['max']:.1f}"] if lat else []
        cells = cells or ["-"] * 3
        cells += [_s(tp[w]) if w in tp else "-" for w in ("trivial", "trivial_results")]
        out.append(f"| {label} | {' | '.join(cells)} |")
    r = p["ratios"]
    out += [
        "",
        "Plain producer / stock: idle latency "
        + ", ".join(f"{k} {r[f'latency_{k}']['median']:.2f}x" for k in ("p50", "p99", "max"))
        + f"; throughput {_x(r['trivial'])} without results and "
        f"{_x(r['trivial_results'])} with (median of per-repetition ratios, min-max).",
    ]
    if p.get("transports"):
        out.append(
            "Transports, as each client reported: "
            + "; ".join(f"{name} `{'`, `'.join(t)}`" for name, t in p["transports"].items())
            + "."
        )
    out += [
        "",
        f"Targets: idle latency p50 and p99 at most {PLAIN_LATENCY_BOUND:g}x stock's, "
        f"throughput at least {PLAIN_THROUGHPUT_BOUND:g}x stock's, measured in the same run.",
        "",
        *_targets_table(p["targets"]),
    ]
    return out


def _x(d: dict[str, float]) -> str:
    return f"{d['median']:.2f}x ({d['min']:.2f}-{d['max']:.2f})"


def _s(d: dict[str, float], digits: int = 0) -> str:
    fmt = f"{{:,.{digits}f}}"
    return f"{fmt.format(d['median'])} ({fmt.format(d['min'])}-{fmt.format(d['max'])})"


def markdown(data: dict[str, Any]) -> str:
    s = data["summary"]
    m = data["machine"]
    la = data["load_average"]
    v = ", ".join(f"{k} {x}" for k, x in m["versions"].items())
    nodes = "; ".join(f"`{n}`: `{' '.join(a)}`" for n, a in m["bundle_nodes"].items())
    out = [
        "# Benchmarks",
        "",
        "Written by `make bench` (bench/harness.py) from `bench/results.json`; "
        "do not edit by hand.",
        "",
        f"- Date: {data['date']} (run took {data['duration_s']:.0f} s)",
        f"- Machine: {m['cpu']}, {m['vcpus']} vCPUs, {m['memory_gib']} GiB; {_load_note(la)}",
        f"- Versions: {v}.",
        f"- Repetitions: {data['sizes']['reps']}; per repetition "
        f"{data['sizes']['trivial']:,} trivial "
        f"tasks per throughput run, {data['sizes']['burn']} CPU tasks, {data['sizes']['latency']} "
        f"round trips per latency run, raw queue {data['sizes']['raw']:,} messages.",
        f"- Bundle worker nodes on the worker host: {nodes}.",
        "",
        "## Targets (issue 6)",
        "",
        *_targets_table(s["targets"]),
    ]
    out += [
        "",
        "## Throughput (tasks/s, median of repetitions, min-max in brackets)",
        "",
        "| configuration | trivial, no results | trivial, results | ~5 ms CPU task |",
        "| --- | --- | --- | --- |",
    ]
    for config, w in s["throughput"].items():
        cells = [_s(w[k]) if k in w else "-" for k in THROUGHPUT]
        out.append(f"| {config} | {' | '.join(cells)} |")
    raw = s["raw"]
    out += [
        f"| raw redis-py, {data['consumer_processes']} processes | {_s(raw['brpop'])} | "
        f"{_s(raw['brpop_setex'])} | - |",
        "",
        "Ratios, each the median of per-repetition ratios (min-max):",
        "",
    ]
    for name, r in s["ratios"].items():
        out.append(f"- {name}: {_s(r, 2)}")
    if s.get("cpu_busy"):
        out += [
            "",
            "## CPU busy while draining (share of all the machine's cores, median)",
            "",
            "From `/proc/stat` over each timed drain: Redis, the workers, the client polling the",
            "queue, journald and the kernel's networking together. Near 100%, no core is left",
            "for another node or process to use.",
            "",
            "| configuration | trivial, no results | trivial, results | ~5 ms CPU task |",
            "| --- | --- | --- | --- |",
        ]
        for config, shares in s["cpu_busy"].items():
            cells = [f"{shares[k]:.0%}" if k in shares else "-" for k in THROUGHPUT]
            out.append(f"| {config} | {' | '.join(cells)} |")
    out += [
        "",
        "`redis-benchmark` on the plain Redis (requests/s): "
        + ", ".join(f"{t} {_s(x)}" for t, x in s["redis_benchmark"].items()),
        "",
        "## Latency of `ping.delay().get()` (ms, all repetitions pooled)",
        "",
        "Under load: while another process on the worker host sends "
        f"{data['sizes']['load_rate']:g} trivial tasks/s.",
        "",
        "| configuration | idle p50 | idle p99 | idle max | load p50 | load p99 | load max |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for config, lat in s["latency_ms"].items():
        i, ld = lat["idle"], lat["load"]
        out.append(
            f"| {config} | {i['p50']:.2f} | {i['p99']:.2f} | {i['max']:.1f} | "
            f"{ld['p50']:.2f} | {ld['p99']:.2f} | {ld['max']:.1f} |"
        )
    if "plain_producer" in s:
        out += ["", *plain_producer_markdown(s["plain_producer"])]
    out += [
        "",
        "## Memory",
        "",
        "| configuration | worker nodes | RSS per node, idle (MiB) | peak under load (MiB) |",
        "| --- | --- | --- | --- |",
    ]
    for config, mem in s["rss_per_node"].items():
        out.append(f"| {config} | {mem['nodes']} | {mem['idle_mib']} | {mem['load_mib']} |")
    out.append("")
    out.append(
        "Redis `used_memory` per 10,000 queued trivial tasks: "
        + ", ".join(f"{c} {b / 2**20:.1f} MiB" for c, b in s["used_memory_per_10k_queued"].items())
        + "."
    )
    deploy = data.get("deploy")
    if deploy:
        out += [
            "",
            "## Deploy speed (seconds)",
            "",
            "| settings | full converge from blank hosts | converge timed at | idempotent re-run |",
            "| --- | --- | --- | --- |",
        ]
        for name, d in deploy["settings"].items():
            reruns = d.get("rerun", [])
            rerun = (
                f"{statistics.median(reruns):.0f} ({min(reruns):.0f}-{max(reruns):.0f})"
                if reruns
                else "-"
            )
            converge = f"{d['converge']:.0f}" if d.get("converge") else "-"
            out.append(f"| {name} | {converge} | {d.get('converge_date', '-')} | {rerun} |")
        out += ["", DEPLOY_NOTE]
    out += ["", METHOD, "", bounds(s)]
    return "\n".join(out).rstrip() + "\n"


def _load_note(la: dict[str, list[float]]) -> str:
    """The 1-minute load average around the run: the lab's own deploy, the run, anything else."""
    return (
        f"load average {la['before'][0]:.2f} before the run (the lab's deploy had just ended) "
        f"and {la['after'][0]:.2f} after it (1 min). Redis, the workers and the load client "
        "share these cores; the configurations alternate within every repetition, so the "
        "ratios compare like with like."
    )


DEPLOY_NOTE = """Timed by `make bench-deploy` (bench/deploy_speed.py) on the bench lab, whose hosts
Ansible reaches through podman. Full converge: one run per setting from fresh
containers (apt installs on the hosts dominate it), not alternated, so the
machine's load at that moment weighs on it. Idempotent re-runs: median (min-max)
of runs alternating between the settings; their `changed` counts are in
`bench/deploy-results.json` (0: idempotent). **bundle** is the repository's
`ansible.cfg`, whose mitogen strategy keeps one Python interpreter per host for
the whole run; **linear** is the same file with Ansible's own strategy, which
starts a new interpreter (and, through podman, a new `podman exec`) for every
task, about 0.4 s each: most of its re-run is that overhead times the tasks.
Its SSH settings (pipelining, ControlPersist) do nothing for podman."""


METHOD = """## Method

Everything runs on the bench lab (`bench/inventory`: one Redis host, one worker
host, podman containers on this machine, deployed by `deploy.yml`). Each
repetition runs every configuration once, in an order rotated from one
repetition to the next:

- **stock**: Celery as its documentation runs it (`bench/stock_app.py`,
  `celery -A stock_app worker --loglevel=INFO`): one node, prefork with one
  process per vCPU, stock settings (prefetch 4, early acknowledgement),
  results on, against a plain Redis (requirepass, no persistence) started by
  the harness on the Redis host (port 6380).
- **bundle** (Bundle defaults): the `celery-worker@` units that `deploy.yml`
  installed with `bench/inventory`, which turns on the two security switches
  the README describes: ACL users, TLS only (mutual), plus the defaults AOF
  and the systemd sandbox. Its topology is the role's default for a `short`
  instance: one solo node per vCPU (`rcbundle.solo.TaskPool`, the solo
  pool with time limits).
- **unhardened**: the same worker nodes with the same arguments, started as
  transient units without the sandbox, against the plain Redis (requirepass,
  no ACL, no TLS, no AOF): the difference to **bundle** is the price of
  hardening.
- **prefork-nodes**: the bundle's nodes, each a prefork pool of one process
  (the role's previous `short` default), against the hardened Redis, started
  as transient units without the sandbox: **bundle** against it is what the
  solo pool gains.
- **one-node**: the bundle's processes as a single prefork node (what `kind:
  long` deploys), against the hardened Redis, started as a transient unit
  without the sandbox: **bundle** against it is what several nodes gain.
- **plain-producer**: the bundle's workers as **bundle** runs them, in its
  turn of the rotation, fed by a producer with no bundle code on its message
  path (`bench/client.py --plain`): the bundle's settings on kombu's own Redis
  transport. Its trivial-task drains and idle latency are measured as the
  others'.
- **stock-1, bundle-1**: one process (stock with `--concurrency 1`, the
  bundle's first node alone) for the CPU-bound task's scaling.
- **raw**: redis-py consumers doing BRPOP (and SETEX of a result), as many
  processes as the bundle's pool processes, on the plain Redis; and
  `redis-benchmark` against it.

Throughput: the workers stop consuming (`cancel_consumer`), N tasks are
published, and the clock runs from `add_consumer` until the queue and kombu's
unacknowledged set are empty (with results, every result is then checked to
exist). The producer's speed never enters. Latency: sequential
`ping.delay().get()` from the worker host. Memory: RSS of each node's main
process and its pool children, at idle and the peak sampled during a run;
Redis `used_memory` before and after queueing tasks nobody consumes. The load
generator, Redis and the workers share the machine's cores, as they would on
one small host.
"""


def bounds(s: dict[str, Any]) -> str:
    """What bounds the figures, worded from this run's own numbers."""
    tp, cpu, r, lat = s["throughput"], s.get("cpu_busy", {}), s["ratios"], s["latency_ms"]

    def rate(config: str, w: str) -> float:
        return float(tp[config][w]["median"])

    def ratio(name: str) -> str:
        x = r[name]
        return f"{x['median']:.2f}x ({x['min']:.2f}-{x['max']:.2f})"

    def cost(name: str) -> str:
        x = r[name]
        return f"{1 - x['median']:.0%} ({1 - x['max']:.0%} to {1 - x['min']:.0%})"

    out = ["What bounds the figures, and so the targets this run did not meet:", ""]
    machine = (
        "- **The machine.** Redis, the workers and the load client share 2 cores, so a "
        "second node or process gains only the CPU the others leave free: 1 to 2 processes "
        f"of the CPU-bound task scale {ratio('bundle_cpu_scaling')} for the bundle and "
        f"{ratio('stock_cpu_scaling')} for stock, against the 1.8x target."
    )
    busy = cpu.get("bundle", {})
    if "trivial" in busy and "trivial_results" in busy:
        need = {
            w: 2 * rate("stock", w) / rate("bundle", w) * busy[w]
            for w in ("trivial", "trivial_results")
        }
        machine += (
            " The CPU table shows how much was left: while the bundle drained trivial tasks "
            f"the cores were {busy['trivial']:.0%} busy without results and "
            f"{busy['trivial_results']:.0%} with. At that CPU per task, 2x stock "
            f"({2 * rate('stock', 'trivial'):,.0f} and "
            f"{2 * rate('stock', 'trivial_results'):,.0f} tasks/s) would need "
            f"{need['trivial']:.0%} and {need['trivial_results']:.0%} of the machine."
        )
    out.append(machine)
    prefork = (
        r["bundle_vs_prefork_nodes_trivial"]["median"],
        r["bundle_vs_prefork_nodes_trivial_results"]["median"],
    )
    out.append(
        "- **Results.** The bundle's solo nodes ran "
        f"{ratio('bundle_vs_stock_trivial')} stock's trivial tasks/s without results and "
        f"{ratio('bundle_vs_stock_trivial_results')} with. Stock's main process only "
        "consumes and hands each task to a child, which stores the result in parallel "
        "(three busy processes), while a solo node consumes, runs and stores in one. "
        "Adding a pool process to each node (prefork-nodes) "
        + (
            "does not win that back here: solo ran "
            if min(prefork) >= 1
            else "changes that here: solo ran "
        )
        + f"{prefork[0]:.2f}x and {prefork[1]:.2f}x its rate."
    )
    out.append(
        "- **Per-task work of the bundle's hardening.** TLS on every round trip, the ACL "
        "user, AOF everysec and the systemd sandbox (late acknowledgement and prefetch 1 "
        "are in both configurations). Their price, 1 - bundle/unhardened, was "
        f"{cost('bundle_vs_unhardened_trivial')} without results and "
        f"{cost('bundle_vs_unhardened_trivial_results')} with (median, and the range over "
        "the repetitions), against the 10% target; where the range spans the target, the "
        "run cannot tell the cost from the machine's noise. "
        "(`task_track_started`, which wrote a STARTED state before each result and roughly "
        "halved two solo nodes' trivial-task throughput with results in a trial on loopback "
        "outside this harness, is set only on the app's long tasks.)"
    )
    out.append(
        "- **Celery against the raw queue.** A Celery task costs about 17 Redis commands in "
        "7 round trips with results on (11 in 4 without; counted with kombu's own transport: "
        "the bundle's rcbundle.transport writes kombu's unacked record inside its fetch, a "
        "round trip fewer), plus kombu's and Celery's Python "
        "work per message; the raw queue costs 1 or 2 commands. The bundle ran "
        f"{ratio('bundle_vs_raw_trivial')} of the raw queue without results and "
        f"{ratio('bundle_vs_raw_trivial_results')} with; stock ran "
        f"{rate('stock', 'trivial') / float(s['raw']['brpop']['median']):.0%} of it."
    )
    if "unhardened" in lat and "bundle" in lat:
        plain, hard = lat["unhardened"]["idle"]["p50"], lat["bundle"]["idle"]["p50"]
        out.append(
            "- **Latency.** A round trip crosses the container network twice and runs "
            f"several Redis commands; even the unhardened nodes took {plain:.1f} ms at p50, "
            f"against the 1.5 ms target. The bundle's {hard - plain:.1f} ms over them is TLS "
            "(every request and reply encrypted), the ACL user and AOF. "
            "p99 and max are scheduling delay on busy cores as much as anything the "
            "configurations do."
        )
    return "\n".join(out)


# The configurations of `make bench-ha` (molecule/ha/tests/test_bench.py), the first the base.
HA_CONFIGS = ("single host", "group, durable publish", "group, no durable publish")


def ha_summary(configs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per configuration: median drain and publish rates, pooled round-trip percentiles, and
    the ratios to the single host's (median throughput, p50)."""
    out: dict[str, dict[str, float]] = {}
    for name in HA_CONFIGS:
        reps = configs[name]
        rtt = latency_summary([ms for r in reps for ms in r["samples_ms"]])
        out[name] = {
            "tasks_per_s": statistics.median(r["tasks_per_s"] for r in reps),
            "publish_per_s": statistics.median(r["publish_per_s"] for r in reps),
            "p50_ms": rtt["p50"],
            "p99_ms": rtt["p99"],
            "max_ms": rtt["max"],
        }
    base = out[HA_CONFIGS[0]]
    for fig in out.values():
        fig["throughput_x"] = ratio(fig["tasks_per_s"], base["tasks_per_s"])
        fig["publish_x"] = ratio(fig["publish_per_s"], base["publish_per_s"])
        fig["p50_x"] = ratio(fig["p50_ms"], base["p50_ms"])
    return out


def ha_markdown(published: dict[str, Any]) -> str:
    """BENCHMARKS.md's HA section from bench/ha-results.json."""
    run = published["run"]
    s = ha_summary(run["configs"])
    out = [
        "## HA: three Redis hosts with Sentinel against one",
        "",
        "Written by `make bench-ha` (molecule/ha/tests/test_bench.py, on the ha scenario's",
        "hosts: ACL users, TLS, AOF on each Redis host; one worker host) into",
        f"`bench/ha-results.json`: run of {published['date']} at commit {published['commit']}.",
        "The group's first host was deployed alone and measured, then grown into the group and",
        "measured with the durable publish (WAIT for one replica after each send) and without it",
        f"(`publish_replicas = 0`), alternating; {run['reps']} repetitions, each draining",
        f"{run['tasks']:,} trivial tasks (the publish rate is the producer's, one task at a",
        "time, before the drain) and timing 300 sequential `ping.delay().get()` round trips.",
        "",
        "| configuration | drain (tasks/s) | x single | publish (tasks/s) | x single"
        " | round trip p50 (ms) | p99 | max | p50 x single |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in HA_CONFIGS:
        f = s[name]
        out.append(
            f"| {name} | {f['tasks_per_s']:.0f} | {f['throughput_x']:.2f} "
            f"| {f['publish_per_s']:.0f} | {f['publish_x']:.2f} | {f['p50_ms']:.1f} "
            f"| {f['p99_ms']:.1f} | {f['max_ms']:.1f} | {f['p50_x']:.2f} |"
        )
    return "\n".join(out) + "\n"
