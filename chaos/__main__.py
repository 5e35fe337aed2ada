"""`python -m chaos [--only 1,3] [--render]`: run the fault-injection suite on the chaos lab.

Exits 1 when an experiment does not pass (its figures are written all the same).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaos.report import render, render_failover, render_ha_experiments, render_safe_deploys

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
NOTES = HERE / "NOTES.md"
SAFE_DEPLOYS = HERE / "safe-deploys.json"
FAILOVER = HERE / "failover.json"
HA_EXPERIMENTS = HERE / "ha-experiments.json"
RELIABILITY = HERE.parent / "RELIABILITY.md"


def write_report(results: dict[str, Any]) -> None:
    text = render(results)
    if SAFE_DEPLOYS.exists():
        text += "\n" + render_safe_deploys(json.loads(SAFE_DEPLOYS.read_text())) + "\n"
    if FAILOVER.exists():
        text += "\n" + render_failover(json.loads(FAILOVER.read_text())) + "\n"
    if HA_EXPERIMENTS.exists():
        text += "\n" + render_ha_experiments(json.loads(HA_EXPERIMENTS.read_text())) + "\n"
    if NOTES.exists():
        text += "\n" + NOTES.read_text()
    RELIABILITY.write_text(text.rstrip("\n") + "\n")


def publish(figures: Path, into: Path, key: str, commit: str | None) -> None:
    """A scenario's figures (build/*.json) into their published file, dated, with the commit
    they were measured at."""
    published = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit or bundle_commit(),
        key: json.loads(figures.read_text()),
    }
    into.write_text(json.dumps(published, indent=2, sort_keys=True) + "\n")


def bundle_commit() -> str:
    """The commit the suite runs, marked "-dirty" when the tree has uncommitted changes."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=HERE.parent, capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def switch(mode: str) -> dict[str, Any]:
    """Redeploy the chaos lab into a security mode: its mode and seconds, and with "error" the
    reason a failed deploy gives (its output's tail is printed)."""
    from chaos.lab import deploy

    print(f"=== deploy.yml into mode {mode}", flush=True)
    code, seconds, tail = deploy(mode=mode)
    done: dict[str, Any] = {"mode": mode, "deploy_seconds": round(seconds)}
    if code != 0:
        print(tail, flush=True)
        done["error"] = f"deploy.yml into mode {mode} failed (exit {code}): {_reason(tail)}"
    return done


def _reason(tail: str) -> str:
    """The line of a failed ansible-playbook's output that says why (its last error line)."""
    lines = [
        line.strip()
        for line in tail.splitlines()
        if any(word in line for word in ("Unable to", "FAILED", "fatal:", "[ERROR]", "msg:"))
    ]
    return (lines[-1] if lines else tail.strip().splitlines()[-1] if tail.strip() else "")[:300]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--only", help="comma-separated experiment numbers (default: all)")
    parser.add_argument("--render", action="store_true", help="only redo RELIABILITY.md")
    parser.add_argument(
        "--safe-deploys",
        metavar="FILE",
        help="publish the default scenario's safe-deploys figures (build/safe-deploys.json)"
        " into chaos/safe-deploys.json, then redo RELIABILITY.md",
    )
    parser.add_argument(
        "--failover",
        metavar="FILE",
        help="publish the ha scenario's failover figures (build/failover.json) into"
        " chaos/failover.json, then redo RELIABILITY.md",
    )
    parser.add_argument(
        "--ha-experiments",
        metavar="FILE",
        help="publish make chaos-ha's figures (build/ha-experiments.json) into"
        " chaos/ha-experiments.json, then redo RELIABILITY.md",
    )
    parser.add_argument(
        "--commit",
        help="with --safe-deploys, --failover or --ha-experiments: the commit the figures were"
        " measured at",
    )
    args = parser.parse_args(argv)
    if args.safe_deploys:
        publish(Path(args.safe_deploys), SAFE_DEPLOYS, "changes", args.commit)
    if args.failover:
        publish(Path(args.failover), FAILOVER, "faults", args.commit)
    if args.ha_experiments:
        publish(Path(args.ha_experiments), HA_EXPERIMENTS, "experiments", args.commit)
    if args.render or args.safe_deploys or args.failover or args.ha_experiments:
        write_report(json.loads(RESULTS.read_text()))
        return 0

    from chaos.experiments import EXPERIMENTS, REDIS_EXPERIMENTS
    from chaos.lab import MODES, Lab

    only = {int(x) for x in args.only.split(",")} if args.only else None
    lab = Lab()
    began = time.monotonic()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": {"bundle commit": bundle_commit(), **lab.versions()},
        "settings": {
            "visibility_timeout": lab.settings.celery.visibility_timeout,
            "task_time_limit": lab.settings.celery.task_time_limit,
            "task_soft_time_limit": lab.settings.celery.task_soft_time_limit,
        },
        "modes": MODES,
        "mode_switches": [],
        "experiments": [],
    }
    deployed = "requirepass"  # the mode the lab was last deployed into
    # Every experiment in the chaos inventory's own mode; then the Redis ones in each other
    # mode, redeploying the lab into it, and back at the end.
    for mode in MODES:
        chosen = [
            (number, title, experiment)
            for number, title, experiment in EXPERIMENTS
            if (only is None or number in only)
            and (mode == "requirepass" or number in REDIS_EXPERIMENTS)
        ]
        if not chosen:
            continue
        if mode != "requirepass":
            switched = switch(mode)
            results["mode_switches"].append(switched)
            deployed = mode
            if "error" in switched:
                # The lab is not in that mode: its experiments are reported as not run.
                for number, title, _ in chosen:
                    results["experiments"].append(
                        {"id": number, "title": title, "mode": mode, "error": switched["error"]}
                    )
                continue
            lab = Lab(mode)
        for number, title, experiment in chosen:
            print(f"=== {number}. {title} ({mode})", flush=True)
            started = time.monotonic()
            entry: dict[str, Any] = {"id": number, "title": title, "mode": mode}
            try:
                entry.update(experiment(lab))
            except Exception as exc:  # one broken experiment must not hide the others' figures
                traceback.print_exc()
                entry["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
                lab.heal()
            entry["seconds"] = round(time.monotonic() - started)
            print(json.dumps(entry, indent=2), flush=True)
            results["experiments"].append(entry)
    if deployed != "requirepass":
        results["mode_switches"].append(switch("requirepass"))
    results["duration_seconds"] = round(time.monotonic() - began)
    out = RESULTS if only is None else HERE.parent / ".lab/chaos/partial-results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    if only is None:
        write_report(results)
    failed = [
        f"{e['id']} ({e['mode']})" for e in results["experiments"] if e.get("verdict") != "pass"
    ]
    failed += [f"deploy into {m['mode']}" for m in results["mode_switches"] if "error" in m]
    print(f"chaos: wrote {out}; not passing: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
