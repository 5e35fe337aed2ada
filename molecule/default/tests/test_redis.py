"""Redis answers only authenticated clients, on the addresses it should."""

from __future__ import annotations

import testinfra

testinfra_hosts = ["redis"]


def cli(host: testinfra.host.Host, password: str | None, *args: str) -> str:
    auth = f"REDISCLI_AUTH='{password}' " if password else ""
    return host.check_output(f"{auth}redis-cli --no-auth-warning {' '.join(args)} 2>&1")


def test_service_enabled_and_running(host: testinfra.host.Host) -> None:
    service = host.service("redis-server")
    assert service.is_running
    assert service.is_enabled


def test_client_without_password_is_refused(host: testinfra.host.Host) -> None:
    assert cli(host, None, "ping").startswith("NOAUTH")


def test_wrong_password_is_refused(host: testinfra.host.Host) -> None:
    assert "WRONGPASS" in cli(host, "not-the-password-at-all", "ping")


def test_password_is_accepted(host: testinfra.host.Host, redis_password: str) -> None:
    assert cli(host, redis_password, "ping") == "PONG"


def test_listens_on_loopback_and_primary_address_only(host: testinfra.host.Host) -> None:
    listening = {
        line.split()[3].rsplit(":", 1)[0]
        for line in host.check_output("ss -Hltn 'sport = :6379'").splitlines()
    }
    # The address of the default route's interface, as Ansible's facts define it.
    primary = host.check_output("ip -4 -o route get 1.1.1.1").split(" src ")[1].split()[0]
    assert listening == {"127.0.0.1", primary}


def test_broker_settings_are_live(host: testinfra.host.Host, redis_password: str) -> None:
    def config(name: str) -> str:
        return cli(host, redis_password, "config", "get", name).splitlines()[1]

    assert config("maxmemory-policy") == "noeviction"
    assert config("appendonly") == "yes"
    assert config("appendfsync") == "everysec"
    assert config("protected-mode") == "yes"
    assert int(config("maxmemory")) > 0


def test_config_file_is_not_world_readable(host: testinfra.host.Host) -> None:
    conf = host.file("/etc/redis/redis.conf")
    assert conf.user == "redis"
    assert conf.mode == 0o640
