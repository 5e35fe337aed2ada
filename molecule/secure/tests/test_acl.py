"""ACL users: the default user is off, the Celery user can do only what Celery needs."""

from __future__ import annotations

import pytest
import testinfra
from conftest import Secrets, cli

testinfra_hosts = ["redis"]


def test_no_password_gets_noauth(host: testinfra.host.Host) -> None:
    assert cli(host, "ping").startswith("NOAUTH")


def test_wrong_password_is_refused(host: testinfra.host.Host) -> None:
    out = cli(host, "ping", user="celery", password="not-the-password-at-all")
    assert "WRONGPASS" in out


def test_default_user_is_disabled(host: testinfra.host.Host, secrets: Secrets) -> None:
    # The admin password is the old requirepass; as the default user it must not work.
    assert "WRONGPASS" in cli(host, "ping", user="default", password=secrets.admin)
    flags = cli(host, "acl", "getuser", "default", user="admin", password=secrets.admin)
    assert "off" in flags.splitlines()
    # It holds every permission (the AOF replay runs as it, redis/redis #14541), so it must
    # have no way in: no password, no nopass.
    assert "nopass" not in flags.splitlines()
    assert "WRONGPASS" in cli(host, "ping", user="default", password="x")


def test_each_user_logs_in(host: testinfra.host.Host, secrets: Secrets) -> None:
    for user, password in [
        ("admin", secrets.admin),
        ("celery", secrets.celery),
        ("monitor", secrets.monitor),
    ]:
        assert cli(host, "ping", user=user, password=password) == "PONG", user


@pytest.mark.parametrize(
    "command",
    [
        ["flushall"],
        ["flushdb"],
        ["swapdb", "0", "1"],
        ["config", "get", "maxmemory"],
        ["shutdown", "nosave"],
        ["keys", "*"],
        ["acl", "list"],
        ["module", "list"],
        ["get", "outside:the-prefix"],
        ["set", "outside:the-prefix", "x"],
    ],
    ids=lambda c: " ".join(c),
)
def test_celery_user_is_refused(
    host: testinfra.host.Host, secrets: Secrets, command: list[str]
) -> None:
    out = cli(host, *command, user="celery", password=secrets.celery)
    assert out.startswith("NOPERM"), out


def test_celery_user_works_under_its_prefix(host: testinfra.host.Host, secrets: Secrets) -> None:
    assert (
        cli(host, "set", "taskapp:probe", "x", "ex", "60", user="celery", password=secrets.celery)
        == "OK"
    )
    assert cli(host, "get", "taskapp:probe", user="celery", password=secrets.celery) == "x"


def test_monitor_user_reads_stats_not_data(host: testinfra.host.Host, secrets: Secrets) -> None:
    assert "redis_version" in cli(host, "info", "server", user="monitor", password=secrets.monitor)
    assert cli(host, "get", "taskapp:probe", user="monitor", password=secrets.monitor).startswith(
        "NOPERM"
    )
    assert cli(host, "set", "taskapp:x", "1", user="monitor", password=secrets.monitor).startswith(
        "NOPERM"
    )


def test_aclfile_holds_hashes_only(host: testinfra.host.Host, secrets: Secrets) -> None:
    acl = host.file("/etc/redis/users.acl")
    assert acl.user == "redis"
    assert acl.mode == 0o640
    content = acl.content_string
    for password in (secrets.admin, secrets.celery, secrets.monitor):
        assert password not in content
    assert not host.file("/etc/redis/redis.conf").contains("^requirepass")


def test_celery_user_may_not_debug(host: testinfra.host.Host, secrets: Secrets) -> None:
    # enable-debug-command no answers before the ACL does; DRYRUN shows the ACL refuses too.
    assert "not allowed" in cli(host, "debug", "sleep", "0", user="celery", password=secrets.celery)
    out = cli(
        host, "acl", "dryrun", "celery", "debug", "sleep", "0", user="admin", password=secrets.admin
    )
    assert "no permissions" in out, out
