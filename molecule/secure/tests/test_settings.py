"""The inventory's memory, persistence and unit settings are the live ones."""

from __future__ import annotations

import re

import testinfra
from conftest import Secrets, cli

testinfra_hosts = ["redis"]


def config(host: testinfra.host.Host, secrets: Secrets, name: str) -> str:
    lines = cli(host, "config", "get", name, user="admin", password=secrets.admin).splitlines()
    assert lines[0] == name, lines
    return lines[1] if len(lines) > 1 else ""


def test_memory_and_persistence_are_the_inventorys(
    host: testinfra.host.Host, secrets: Secrets
) -> None:
    assert config(host, secrets, "maxmemory") == str(256 * 1024 * 1024)
    assert config(host, secrets, "maxmemory-policy") == "noeviction"
    assert config(host, secrets, "appendonly") == "yes"
    assert config(host, secrets, "appendfsync") == "everysec"
    assert config(host, secrets, "aof-use-rdb-preamble") == "yes"
    assert config(host, secrets, "save") == ""


def test_network_settings(host: testinfra.host.Host, secrets: Secrets) -> None:
    assert config(host, secrets, "port") == "0"
    assert config(host, secrets, "tls-port") == "6379"
    assert config(host, secrets, "tls-auth-clients") == "yes"
    assert config(host, secrets, "tls-protocols") == "TLSv1.2 TLSv1.3"
    assert config(host, secrets, "tls-replication") == "yes"
    assert config(host, secrets, "protected-mode") == "yes"
    assert "0.0.0.0" not in config(host, secrets, "bind")


def test_config_file_is_not_world_readable(host: testinfra.host.Host) -> None:
    conf = host.file("/etc/redis/redis.conf")
    assert conf.user == "redis"
    assert conf.mode == 0o640


def test_open_file_limit_covers_maxclients(host: testinfra.host.Host, secrets: Secrets) -> None:
    maxclients = int(config(host, secrets, "maxclients"))
    pid = host.check_output("systemctl show -p MainPID --value redis-server")
    limits = host.check_output(f"cat /proc/{pid}/limits")
    soft = int(re.search(r"Max open files\s+(\d+)", limits).group(1))  # type: ignore[union-attr]
    assert soft >= maxclients + 32


def test_kernel_settings_are_persisted(host: testinfra.host.Host) -> None:
    sysctl = host.file("/etc/sysctl.d/60-redis.conf").content_string
    assert "vm.overcommit_memory = 1" in sysctl
    assert int(re.search(r"net.core.somaxconn = (\d+)", sysctl).group(1)) >= 511  # type: ignore[union-attr]
    assert (
        "transparent_hugepage/enabled - - - - never"
        in host.file("/etc/tmpfiles.d/redis-thp.conf").content_string
    )


def exposure(output: str) -> float:
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", output)
    assert match, output
    return float(match.group(1))


def test_unit_exposure_is_no_worse_than_debians(host: testinfra.host.Host) -> None:
    ours = exposure(host.check_output("systemd-analyze security --no-pager redis-server.service"))
    debian = exposure(
        host.check_output(
            "systemd-analyze security --no-pager --offline=yes "
            "/lib/systemd/system/redis-server.service"
        )
    )
    print(f"systemd-analyze security exposure: ours {ours}, Debian's unit {debian}")
    assert ours <= debian
    assert ours <= 2.0
