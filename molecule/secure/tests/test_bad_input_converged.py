"""The bad-input tables of tests/, run against this converged cluster: each case stops the full
`ansible-playbook deploy.yml` before any host changes, with its message; nothing on the hosts moved.

The cases are the bundle tests' own (tests/test_bad_input*.py), given as extra vars, which outrank
the inventory. tests/ runs every case's validation on the controller; here one case of each kind
of rule runs against real, converged hosts (a full deploy each, so not all of them): argument-spec
choices and types, ranges, rules on the hosts' own facts (RAM), files on the controller (TLS),
ACL rules, cross-field and per-node worker rules.
"""

from __future__ import annotations

import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import testinfra
from conftest import REPO, WORKER, deploy

sys.path.insert(0, str(REPO / "tests"))
import test_bad_input
import test_bad_input_redis
import test_bad_input_workers

testinfra_hosts = ["redis"]

ONE_OF_EACH_KIND = {
    "short password",
    "unknown policy",
    "number as a string",
    "wildcard bind",
    "bind entry that is not an IP address",
    "queue name with a space",
    "maxmemory larger than the host's RAM",
    "broker and results servers larger than the host's RAM together",
    "TLS certificate file missing",
    "acl mode without the Celery user's password",
    "acl command that is not a command name",
    "hard limit above visibility timeout",
    "node names collide",
    "solo pool with concurrency",
    "schedule entry without interval",
}
ALL_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    (name, {**redis_vars, **worker_vars}, expected)
    for name, redis_vars, worker_vars, extra_redis, expected in test_bad_input.CASES
    if not extra_redis
]
ALL_CASES += test_bad_input_redis.CASES
ALL_CASES += test_bad_input_workers.HOST_CASES
CASES = [case for case in ALL_CASES if case[0] in ONE_OF_EACH_KIND]

# What a change on a host would touch: managed files (path, mtime, size), the units' process
# generations and Redis's run ids.
SNAPSHOT = (
    "find /etc/redis /etc/taskapp /etc/systemd/system /etc/sysctl.d /etc/tmpfiles.d /opt/taskapp"
    " -printf '%p %T@ %s\\n' 2>/dev/null | sort; "
    "systemctl show -p Id -p InvocationID 'redis-server*' 'celery-*' | sort"
)


def snapshot() -> dict[str, str]:
    return {
        name: testinfra.get_host(f"podman://{name}").check_output(SNAPSHOT)
        for name in ("mol-secure-redis1", WORKER)
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every case's output (key "" holds the hosts' snapshot from before the first run)."""
    before = snapshot()
    root = tmp_path_factory.mktemp("bad-input")

    def run(case: tuple[str, dict[str, Any], list[str]]) -> tuple[str, str]:
        vars_file = root / f"{abs(hash(case[0]))}.json"
        vars_file.write_text(json.dumps(case[1]))
        # -T: three full runs at once on a loaded 2-core machine took longer than Ansible's
        # 10 s to open a connection (UNREACHABLE at fact gathering, so no validation message).
        proc = deploy("-T", "60", "-e", f"@{vars_file}")
        return case[0], f"rc={proc.returncode}\n{proc.stdout}{proc.stderr}"

    # The runs only read the hosts, so they may overlap; three at a time keep both cores busy.
    with ThreadPoolExecutor(max_workers=3) as pool:
        outputs = dict(pool.map(run, CASES))
    return {"": json.dumps(before), **outputs}


def test_every_chosen_case_exists() -> None:
    # A case renamed in tests/ must not drop out of this run unnoticed.
    assert {case[0] for case in CASES} == ONE_OF_EACH_KIND


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_stops_before_any_host_changes(
    runs: dict[str, str], case: tuple[str, dict[str, Any], list[str]]
) -> None:
    output = runs[case[0]]
    assert not output.startswith("rc=0\n"), output[-3000:]
    for text in case[2]:
        assert text in output, f"{text!r} missing from:\n{output[-3000:]}"
    # No host play started, nor the certificates step (a bad redis_bind is validation's to
    # refuse, not the certificate module's), and the recap counts no change anywhere.
    for play in ("Certificates", "Redis", "Celery workers"):
        assert f"PLAY [{play}" not in output, output[-3000:]
    changed = re.findall(r"\bchanged=(\d+)", output)
    assert changed, output[-3000:]
    assert set(changed) == {"0"}, output[-3000:]


def test_nothing_changed_on_the_hosts(runs: dict[str, str]) -> None:
    assert snapshot() == json.loads(runs[""])
