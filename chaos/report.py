"""RELIABILITY.md, rendered from the results file alone (so it can be redone without a lab)."""

from __future__ import annotations

import json
from typing import Any

METHOD = """\
## Method

`make chaos` creates (or reuses) the lab `chaos` (containers `chaos-redis1`,
`chaos-worker1`, `chaos-worker2` on network `bundle-chaos`, inventory
`chaos/inventory/`), deploys it with `ansible-playbook deploy.yml`, then runs
the experiments from this machine (`python -m chaos`), reaching Redis through
127.0.0.1:16380 and the hosts through `podman exec`.

Side effects are counted, not Celery states: every task sent is
`taskapp.record_work(key, seconds, label)`, which appends a `start` entry,
sleeps, then appends a `done` entry (both carrying the key and an execution
id) to a list in the result store. Each key is sent once. A key without a
`done` is **lost**; every `done` beyond the first is a **duplicate**
execution; a `start` without its `done` is an execution **interrupted**
midway. Keys whose send raised at the producer are counted apart (refused),
never as lost. Fault times are taken on the controller, entry times on the
hosts: containers share the machine's clock.

The workers run exactly what a user gets: the chaos inventory sets no
celery_worker variable. So the default topology, one `rcbundle.solo` node per
vCPU, each its own systemd unit (`celery-worker@default`,
`celery-worker@default-2` on each of these 2-vCPU hosts, one process each,
prefetch 1, `task_acks_late`), and the default timeouts: visibility timeout
3600 s, time limits 330/300 s, `TimeoutStopSec` 370 s, `RestartSec` 5 s.

No experiment waits for the visibility timeout. rcbundle's transport
records each fetched message with its owner (the node name): a killed node's
restarted unit gives back its killed process's unacknowledged messages
before it consumes, and a reconnect of a live process takes back at once a
fetch whose reply was lost with the connection. Each experiment therefore
waits a bounded time after its last fault (240 s; 150 s after an idle cut,
180 s after a rolling deploy) for every accepted task to complete, and a task
not completed by then counts as **lost**: with kombu's own restore it would
come back only after the hour (`lost_in_unacked` says how many such tasks
are still held in kombu's `unacked` hash, as opposed to gone).

Experiment 1 kills, 20 times and alternating between the hosts, the node
that runs a task (SIGKILL of that unit's one process), and measures the
**redelivery time**: from the kill to the next start of the interrupted
task, on any node. Its criterion is lost 0 and redelivery p99 <= 60 s
(nearest rank: with fewer than 100 values the p99 is the maximum).

Every experiment runs in the chaos inventory's own Redis mode (`requirepass`,
plain TCP). The Redis experiments (3 and 4) then run again with the lab
redeployed with `redis_auth_mode: acl` and `redis_tls: true` (ACL users,
mutual TLS; the workers log in as the least-privilege `celery` user under the
`taskapp:` key prefix, the controller reads Redis as `admin` with a worker
host's certificate), and the lab is deployed back to its own mode at the end.
Redis replays its append-only file differently in ACL mode (as the `default`
user, whose permissions it checks at each `EXEC`), so what survives a
restart must be measured there too. Experiment 3 counts *revived* messages
(queued after the restart but not before the kill: consumed tasks put back)
and passes only with none; experiment 4 allows one duplicate per worker
process and restart (an acknowledgement lost with the connection) and no
more.
"""


def _fmt(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(_fmt(v) for v in value)
    return str(value)


def headline(exp: dict[str, Any]) -> str:
    """The few numbers that answer the experiment's question, for the table."""
    r = exp.get("result", {})
    if "error" in exp:
        return f"error: {exp['error']}"
    n = exp["id"]
    base = f"lost {r.get('lost', '-')}, duplicates {r.get('duplicates', '-')}"
    if n == 1:
        d = r["redelivery_seconds"]
        return (
            f"{r['accepted']} tasks, {r['kills_mid_task']}/{r['kills']} kills mid-task, "
            f"{r['interrupted']} executions interrupted; {base}; "
            f"redelivery p50 {d['p50']} s, p99 {d.get('p99', '-')} s, max {d['max']} s "
            f"(p99 bound {r.get('redelivery_p99_bound_seconds', '-')} s)"
        )
    if n == 2:
        parts = [
            f"{m}: {v['finished']}/{v['running_at_stop']} running tasks finished"
            for m, v in r["per_method"].items()
        ]
        return f"{r['accepted']} tasks; {'; '.join(parts)}; {base}"
    if n == 3:
        parts = []
        for persistence, rounds in r["rounds"].items():
            kept = ", ".join(
                f"{x['queued_after_restart']}/{x['queued_before_kill']}" for x in rounds
            )
            lost = sum(x["lost"] for x in rounds)
            revived = sum(x.get("revived", 0) for x in rounds)
            duplicates = sum(x["duplicates"] for x in rounds)
            parts.append(
                f"{persistence}: kept {kept}, revived {revived}, lost {lost}, "
                f"duplicates {duplicates}"
            )
        return "; ".join(parts)
    if n == 4:
        d = r["worker_resumptions"]
        return (
            f"{r['accepted']} tasks; workers resumed p50 {d['p50']} s, max {d['max']} s, "
            f"{r['workers_not_resumed_within_bound']} never; {base} "
            f"(allowed {r.get('duplicates_allowed', '-')}), "
            f"{r['refused_at_send']} sends refused during restarts"
        )
    if n == 5:
        rounds = r["rounds"]
        return "; ".join(
            f"accepted {x['accepted']}, refused {x['refused']}, evicted_keys {x['evicted_keys']}, "
            f"lost {x['lost']}"
            for x in rounds
        )
    if n == 6:
        restarted = ", ".join(str(d["hosts_restarted"]) for d in r["deploys"])
        return (
            f"{r['accepted']} tasks; hosts restarted per deploy {restarted}; {base}, "
            f"failed {r['failed']}"
        )
    if n == 7:
        d = r["back_to_consuming_seconds"]
        return (
            f"{r['accepted']} tasks; {r['cut_seconds']} s cuts; consuming again p50 {d['p50']} s, "
            f"max {d['max']} s; {r['executions_cut_midway']} executions cut midway; {base}; "
            f"idle host cut {len(r['idle_cuts'])} times, {r['idle_cut_tasks']} tasks sent "
            f"during the cuts, lost {r['idle_cut_lost']}"
        )
    return _fmt(r)


def _mode(exp: dict[str, Any]) -> str:
    """The Redis security mode the experiment ran in (runs before modes existed: requirepass)."""
    return MODE_NAMES[exp.get("mode", "requirepass")]


MODE_NAMES = {"requirepass": "requirepass, plain TCP", "acl+tls": "ACL users, mutual TLS"}


def render(results: dict[str, Any]) -> str:
    lines = [
        "# Reliability, proven with counts",
        "",
        "Generated by `make chaos` (`python -m chaos`) from `chaos/results.json`;",
        "do not edit by hand. Every figure below is from that run, good or bad.",
        "",
        f"Date: {results['date']}. Suite duration: {results['duration_seconds']} s.",
        "",
        "| # | experiment | Redis mode | repetitions | counted | result | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for exp in results["experiments"]:
        lines.append(
            f"| {exp['id']} | {exp['title']} | {_mode(exp)} | {exp.get('repetitions', '-')} | "
            f"{exp.get('counted', '-')} | {headline(exp)} | "
            f"{exp.get('verdict', 'error')} ({exp.get('criterion', '')}) |"
        )
    lines += ["", "## Details", ""]
    for exp in results["experiments"]:
        lines.append(f"### {exp['id']}. {exp['title']} ({_mode(exp)})")
        lines.append("")
        lines.append(f"Took {exp.get('seconds', '-')} s. Criterion: {exp.get('criterion', '-')}.")
        lines.append("")
        lines.append("```json")
        lines.append(json.dumps(exp.get("result", {"error": exp.get("error")}), indent=2))
        lines.append("```")
        for note in exp.get("notes", []):
            lines.append("")
            lines.append(note)
        lines.append("")
    lines += ["## Versions", "", "| component | version |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in results["versions"].items()]
    lines += ["", METHOD]
    return "\n".join(lines)


def render_safe_deploys(published: dict[str, Any]) -> str:
    """The safe-deploys section: the default scenario's broken changes and their rollbacks."""
    lines = [
        "## Safe deploys: broken changes rolled back under a task stream",
        "",
        "From `molecule/default/tests/test_safe_deploys.py` (run by `make test`), published into",
        "`chaos/safe-deploys.json` by `python -m chaos --safe-deploys build/safe-deploys.json`:",
        f"run of {published['date']} at commit {published['commit']}. Each change went through a",
        "full `ansible-playbook deploy.yml` while a plain Celery producer sent a task every 0.2 s;",
        "the broken host was put back on its earlier release and configuration and the run stopped",
        "before the next host. The row `rollback playbook` is `playbooks/rollback.yml` taking both",
        "worker hosts back, one at a time, to the release a good deploy had just replaced.",
        "",
        "| change | tasks sent | lost | host down (s) | rollback (s) | deploy run (s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    keys = ("tasks_sent", "tasks_lost", "host_down_seconds", "rollback_seconds", "deploy_seconds")
    for name, fig in sorted(published["changes"].items()):
        cells = ["-" if fig.get(key) is None else _fmt(fig[key]) for key in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_failover(published: dict[str, Any]) -> str:
    """The failover section: the ha scenario's faults of the master under a task stream."""
    lines = [
        "## Failover: the master's host frozen or cut off under a task stream",
        "",
        "From the ha scenario's tests (`molecule/ha/tests/test_failover.py`,",
        "`test_isolation.py`, `test_rolling_restart.py`, run by `make test`), published into",
        "`chaos/failover.json` by",
        "`python -m chaos --failover build/failover.json`:",
        f"run of {published['date']} at commit {published['commit']}. Three Redis hosts with",
        "Sentinel (TLS, ACL users), one worker host. The bundle's producer (the workers' config:",
        "Sentinels, durable publish) sent a task every 0.1 s for 40 s; 8 s in, the master's",
        "container was frozen (`podman pause`: its host neither answers nor closes a",
        "connection) or cut off from the network (`podman network disconnect`, 40 s and more).",
        "A task is accepted when its send returned; lost when accepted and never run. Refused",
        "sends are those the producer was told failed (it may send them again). Time is",
        "counted from the fault. Row `rolling restart`",
        "(`molecule/ha/tests/test_rolling_restart.py`): no host frozen, a deploy that restarts",
        "every Redis server (a `redis.conf` change) under the same stream; the servers restart",
        "in turn, the master after a switchover. Its times count from the deploy's start.",
        "",
        "| fault | tasks sent | accepted | refused | lost | run twice | replica promoted (s)"
        " | first task done after the fault (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    keys = (
        "tasks_sent",
        "tasks_accepted",
        "sends_refused",
        "tasks_lost",
        "tasks_run_twice",
        "promoted_after_seconds",
        "first_task_after_seconds",
    )
    faults = published["faults"]
    for name, fig in sorted(faults.items()):
        cells = ["-" if fig.get(key) is None else _fmt(fig[key]) for key in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    isolated = {
        name: fig
        for name, fig in sorted(faults.items())
        if "isolated_writes_acknowledged_and_lost" in fig
    }
    if isolated:
        lines += [
            "",
            "On the cut-off side, a client on the old master's own host wrote every 0.2 s (LPUSH,",
            "then WAIT 1 on the same connection). Writes a replica acknowledged and lost: the",
            "durable publish's promise. Plain writes the old master took while cut off and lost",
            "when it rejoined as a replica: what a producer without the wait risks.",
            "",
            "| fault | acknowledged by a replica, then lost | plain writes taken, then lost"
            " | old master refused writes after (s) |",
            "| --- | --- | --- | --- |",
        ]
        side = (
            "isolated_writes_acknowledged_and_lost",
            "isolated_plain_writes_taken_then_lost",
            "isolated_master_refused_writes_after_seconds",
        )
        for name, fig in isolated.items():
            cells = ["-" if fig.get(key) is None else _fmt(fig[key]) for key in side]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _p50_max(times: dict[str, Any] | None) -> str:
    """A summary()'s p50 and max as "p50 / max" ("-" when it has no value)."""
    if not times or times.get("p50") is None:
        return "-"
    return f"{_fmt(times['p50'])} / {_fmt(times['max'])}"


def render_ha_experiments(published: dict[str, Any]) -> str:
    """The repeated faults of `make chaos-ha` (molecule/ha/tests/test_experiments.py)."""
    lines = [
        "## Failover, repeated: the master killed, rolling restarts",
        "",
        "From `make chaos-ha` (`molecule/ha/tests/test_experiments.py`, on the ha scenario's",
        "hosts: three Redis hosts with Sentinel, TLS and ACL users, one worker host), published",
        "into `chaos/ha-experiments.json` by `python -m chaos --ha-experiments",
        f"build/ha-experiments.json`: run of {published['date']} at commit",
        f"{published['commit']}. Each round: the bundle's producer sent a task every 0.1 s for",
        "40 s; 8 s in, the master's server got SIGKILL. Kept down, its unit was kept from",
        "restarting, so the Sentinels promoted a replica (then it was started again and rejoined",
        "as a replica; the next round killed the new master). Restarted by systemd, it came back",
        "with its AOF before the Sentinels judged it down. Without the durable publish, the",
        "producer did not wait for a replica's WAIT: what a plain producer risks. Rolling",
        "restart: a deploy that needs every server restarted, under the same stream. Counted",
        "as in the table above; times in seconds from the kill (p50 / max over the rounds).",
        "",
        "| experiment | rounds | tasks sent | accepted | refused | lost | run twice"
        " | replica promoted (s) | first task done after (s) | workers restarted |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    counts = ("tasks_sent", "tasks_accepted", "sends_refused", "tasks_lost", "tasks_run_twice")
    for name, fig in sorted(published["experiments"].items()):
        cells = [_fmt(fig.get("rounds", "-"))] + [_fmt(fig.get(key, "-")) for key in counts]
        cells += [
            _p50_max(fig.get("promoted_after_seconds")),
            _p50_max(fig.get("first_task_after_seconds")),
            _fmt(fig.get("workers_restarted", "-")),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, fig in sorted(published["experiments"].items()):
        if "isolated_writes_acknowledged_and_lost" in fig:
            lines += [
                "",
                f"{name}, on the cut-off side (a client beside the old master, as in the table",
                "above): writes a replica acknowledged, then lost:"
                f" {fig['isolated_writes_acknowledged_and_lost']}; plain writes taken, then"
                f" lost: {fig['isolated_plain_writes_taken_then_lost']}; the old master refused",
                "writes after (s, p50 / max):"
                f" {_p50_max(fig.get('isolated_master_refused_writes_after_seconds'))}.",
            ]
    return "\n".join(lines) + "\n"
