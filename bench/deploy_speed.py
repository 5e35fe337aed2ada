"""Deploy speed on the bench lab: full converge from blank hosts and idempotent re-runs.

Three Ansible settings, run in the same session, re-runs alternating:

- bundle: the repository's ansible.cfg (the mitogen strategy, smart gathering,
  forks 20, a fixed interpreter path);
- linear: the same ansible.cfg with Ansible's own strategy (ANSIBLE_STRATEGY=linear),
  which is what mitogen gains;
- defaults: Ansible's own defaults (an ansible.cfg holding only roles_path,
  which is not a speed setting).

Each full converge starts from fresh containers (scripts/lab.sh down, then the
containers created again without deploying). Writes bench/deploy-results.json,
which bench/harness.py folds into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness import LAB, REPO

DEPLOY = [str(REPO / ".venv/bin/ansible-playbook"), "deploy.yml", "-i", LAB["LAB_INVENTORY"]]


def settings(tmp: Path) -> dict[str, dict[str, str]]:
    """Each setting's environment for ansible-playbook."""
    defaults = tmp / "defaults.cfg"
    defaults.write_text(f"[defaults]\nroles_path = {REPO / 'roles'}\n")
    bundle = str(REPO / "ansible.cfg")
    return {
        "bundle": {"ANSIBLE_CONFIG": bundle},
        "linear": {"ANSIBLE_CONFIG": bundle, "ANSIBLE_STRATEGY": "linear"},
        "defaults": {"ANSIBLE_CONFIG": str(defaults)},
    }


def lab(command: str, *, deploy: bool) -> None:
    env = {**os.environ, **LAB}
    if not deploy:
        env["LAB_DEPLOY"] = "0"
    subprocess.run(
        [str(REPO / "scripts/lab.sh"), command],
        env=env,
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )


def deploy(env: dict[str, str]) -> tuple[float, int]:
    """Seconds for one deploy.yml run, and how many tasks it changed."""
    t0 = time.monotonic()
    done = subprocess.run(
        DEPLOY,
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    elapsed = time.monotonic() - t0
    if done.returncode != 0:
        raise RuntimeError(f"deploy failed ({env}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    changed = sum(int(n) for n in re.findall(r"changed=(\d+)", done.stdout))
    return elapsed, changed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reruns", type=int, default=3, help="idempotent re-runs per setting")
    parser.add_argument(
        "--converge",
        default="bundle,linear,defaults",
        help="settings to time a full converge from blank hosts with ('' for none)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench/deploy-results.json")
    args = parser.parse_args(argv)
    # Converges not timed in this run keep the figure of the previous run, which says when.
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    result: dict[str, Any] = {
        "settings": {},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with tempfile.TemporaryDirectory() as tmp:
        configs = settings(Path(tmp))
        for name, env in configs.items():
            entry: dict[str, Any] = {"rerun": [], "rerun_changed": []}
            if name in args.converge.split(","):
                lab("down", deploy=False)
                lab("up", deploy=False)
                entry["converge"], entry["converge_changed"] = deploy(env)
                print(f"deploy-speed: {name} converge {entry['converge']:.0f} s", flush=True)
            else:
                old = previous.get("settings", {}).get(name, {})
                for key in ("converge", "converge_changed", "converge_date"):
                    if key in old:
                        entry[key] = old[key]
            entry.setdefault("converge_date", result["date"])
            result["settings"][name] = entry
        for rep in range(args.reruns):
            order = list(configs.items())
            for name, env in order[rep % 3 :] + order[: rep % 3]:
                seconds, changed = deploy(env)
                result["settings"][name]["rerun"].append(seconds)
                result["settings"][name]["rerun_changed"].append(changed)
                print(f"deploy-speed: {name} re-run {seconds:.0f} s, changed={changed}", flush=True)
    s = result["settings"]

    result["ratios"] = {
        "rerun_bundle_vs_defaults": statistics.median(s["bundle"]["rerun"])
        / statistics.median(s["defaults"]["rerun"]),
        "rerun_linear_vs_defaults": statistics.median(s["linear"]["rerun"])
        / statistics.median(s["defaults"]["rerun"]),
    }
    result["load_average"] = os.getloadavg()
    result["note"] = (
        "Full converge: one run per setting from fresh containers (apt installs on the hosts "
        "dominate it), not alternated, so the machine's load at that moment weighs on it. "
        "Re-runs: median (min-max) of runs alternating between the settings; the changed "
        "counts are in bench/deploy-results.json (0 is idempotent)."
    )
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["ratios"]))
    sys.exit(0)


if __name__ == "__main__":
    main()
