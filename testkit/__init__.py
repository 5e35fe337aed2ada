"""What the test suites and the lab harnesses (chaos/, bench/) share: playbook runs with the
bundle's own ansible.cfg, and commands on lab hosts. Imported from the repository's root."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def playbook(
    name: str, inventory: str | Path, *args: str, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """ansible-playbook NAME -i INVENTORY ARGS from the repository's root, as a user runs it:
    the bundle's ansible.cfg (mitogen, roles path), never raising on a failed run."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_NOCOLOR": "1",
    }
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), name, "-i", str(inventory), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """A playbook run's PLAY RECAP: each host's counts (ok, changed, failed, ...), colours or
    not (Molecule's verify step forces them on)."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", stdout)
    return {
        host: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
        for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", plain, re.M)
    }


def molecule_inventory() -> Path:
    """The running Molecule scenario's inventory: the directory of the file molecule wrote, with
    the scenario's group_vars and host_vars links beside it."""
    return Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent


def run(*argv: str, timeout: float = 120, check: bool = True) -> str:
    """A command on this machine; its stdout. With check, a non-zero exit raises with the output."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def on(host: str, command: str, timeout: float = 120, check: bool = True) -> str:
    """A shell command inside a lab host (a podman container); its stdout."""
    return run("podman", "exec", host, "sh", "-c", command, timeout=timeout, check=check)
