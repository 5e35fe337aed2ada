"""Each worker host runs its instances sandboxed, as the inventory sizes them."""

from __future__ import annotations

import json

import testinfra

testinfra_hosts = ["celery_workers"]

# As the units run it: the environment file the role writes, the release's celery.
CELERY = "env $(grep -v '^#' /etc/textstats/celery.env) /opt/textstats/current/venv/bin/celery"


def test_unit_enabled_and_running(host: testinfra.host.Host) -> None:
    service = host.service("celery-worker@default")
    assert service.is_running
    assert service.is_enabled


def test_worker_does_not_run_as_root(host: testinfra.host.Host) -> None:
    users = host.check_output("ps -o user= -C celery || ps -eo user=,args= | grep '[c]elery'")
    assert users
    assert "root" not in users.split()


def test_config_is_readable_by_the_app_only(host: testinfra.host.Host) -> None:
    conf = host.file("/etc/textstats/config.toml")
    assert (conf.user, conf.group, conf.mode) == ("root", "textstats", 0o640)


def test_stop_waits_for_running_tasks(host: testinfra.host.Host) -> None:
    props = host.check_output(
        "systemctl show celery-worker@default -p KillMode -p TimeoutStopUSec -p Type"
    )
    assert "KillMode=mixed" in props
    assert "Type=notify" in props
    # hard time limit 330 + soft shutdown 10 + margin 30
    assert "TimeoutStopUSec=6min 10s" in props


def test_topology_matches_inventory(host: testinfra.host.Host) -> None:
    hostname = host.check_output("hostname")
    vcpus = int(host.check_output("nproc"))
    # worker1 is left to the role: a `short` instance runs one solo node per vCPU.
    # host_vars/mol-default-worker2.yml sets concurrency 1, which keeps one prefork node.
    nodes = 1 if hostname == "mol-default-worker2" else vcpus
    names = ["default"] + [f"default-{n}" for n in range(2, nodes + 1)]
    units = host.check_output("systemctl list-units --plain --no-legend 'celery-worker@*'")
    running = sorted(line.split()[0] for line in units.splitlines() if " running " in line)
    assert running == sorted(f"celery-worker@{name}.service" for name in names)
    out = host.check_output(
        f"{CELERY} --app textstats.worker:celery_app inspect stats --json --timeout 10 "
        f"--destination {','.join(f'{name}@{hostname}' for name in names)}"
    )
    stats = json.loads(out)
    assert sorted(stats) == sorted(f"{name}@{hostname}" for name in names)
    pool = "rcbundle.solo" if nodes > 1 else "celery.concurrency.prefork"
    for node in stats.values():
        assert node["pool"]["max-concurrency"] == 1
        assert node["pool"]["implementation"].startswith(pool), node["pool"]


def test_unit_is_sandboxed(host: testinfra.host.Host) -> None:
    out = host.check_output("systemd-analyze security --no-pager celery-worker@default.service")
    exposure = float(out.strip().splitlines()[-1].split()[-3])
    assert exposure <= 2.5, out
