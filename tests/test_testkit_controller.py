"""testkit.controller: a worker host's config file, pointed at the controller's loopback ports,
written back as TOML that rcbundle reads. Without a lab: the host's file is given here."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

import testkit
from rcbundle.config import celery_config, load_settings
from testkit import controller

# As roles/celery_worker/templates/etc/app/config.toml.j2 writes it, with values that need care.
WORKER_FILE = """\
# Ansible managed
[redis]
host = "mol-redis1"
port = 6379
username = "celery"
password = "p@ss:w/rd \\"quoted\\" \\\\ \\u007f é"
broker_db = 0
result_db = 1
result_host = ""
result_port = {result_port}
key_prefix = "taskapp:"

[redis.tls]
enabled = {tls}
{tls_files}
[celery]
task_soft_time_limit = 50
task_time_limit = 60
visibility_timeout = 300
result_expires = 86400
worker_prefetch_multiplier = 1
worker_soft_shutdown_timeout = 10
default_queue = "celery"

[celery.task_routes]
"taskapp.record" = "io"

[celery.beat_schedule."tick every 5"]
task = "taskapp.record"
every = 5
"""
TLS_FILES = """\
ca_file = "/etc/taskapp/tls/ca.crt"
cert_file = "/etc/taskapp/tls/client.crt"
key_file = "/etc/taskapp/tls/client.key"
"""


def on_host(monkeypatch: pytest.MonkeyPatch, *, tls: bool = False, result_port: int = 0) -> None:
    text = WORKER_FILE.format(
        tls=str(tls).lower(), tls_files=TLS_FILES if tls else "", result_port=result_port
    )
    monkeypatch.setattr(controller, "on", lambda host, command: text)


def test_plain_file_points_at_the_loopback_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    on_host(monkeypatch)
    data = controller.worker_config("w1", port=16396)
    settings = load_settings(controller.write_toml(data, tmp_path / "config.toml"))
    assert (settings.redis.host, settings.redis.port) == ("127.0.0.1", 16396)
    assert settings.redis.password == 'p@ss:w/rd "quoted" \\ \x7f é'
    assert settings.celery.task_routes == {"taskapp.record": "io"}
    assert settings.celery.beat_schedule["tick every 5"].every == 5
    conf = celery_config(settings)
    assert str(conf["broker_url"]).endswith("@127.0.0.1:16396/0")
    assert str(conf["result_backend"]).endswith("@127.0.0.1:16396/1")


def test_tls_uses_the_hosts_certificate_from_the_pki(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    on_host(monkeypatch, tls=True, result_port=6380)
    pki = REPO / "build/pki"
    data = controller.worker_config("w1", port=16391, result_port=16392, pki=pki)
    settings = load_settings(controller.write_toml(data, tmp_path / "config.toml"))
    assert settings.redis.tls.cert_file == str(pki / "w1.crt")
    assert settings.redis.tls.key_file == str(pki / "w1.key")
    assert settings.redis.tls.ca_file == str(pki / "ca.crt")
    assert str(celery_config(settings)["result_backend"]).startswith("rediss://")
    assert str(celery_config(settings)["result_backend"]).endswith("@127.0.0.1:16392/1")


@pytest.mark.parametrize(
    ("tls", "result_port", "message"),
    [(False, 6380, "separate results server"), (True, 0, "turns TLS on")],
)
def test_what_the_controller_cannot_reach_is_refused(
    monkeypatch: pytest.MonkeyPatch,
    tls: bool,
    result_port: int,
    message: str,
) -> None:
    on_host(monkeypatch, tls=tls, result_port=result_port)
    with pytest.raises(ValueError, match=message):
        controller.worker_config("w1", port=1)


def test_a_value_toml_cannot_hold_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        controller.write_toml({"a": {"b": 1.5}}, tmp_path / "x.toml")


def test_recap_reads_each_hosts_counts_with_colours_or_without() -> None:
    plain = (
        "PLAY RECAP ****\n"
        "redis1                     : ok=5    changed=0    unreachable=0    failed=1    skipped=7\n"
        "worker1                    : ok=6    changed=2    unreachable=0    failed=0    skipped=4\n"
    )
    coloured = plain.replace("redis1", "\x1b[0;31mredis1\x1b[0m").replace(
        "ok=5", "\x1b[0;32mok=5\x1b[0m"
    )
    for stdout in (plain, coloured):
        counts = testkit.recap(stdout)
        assert counts["redis1"]["failed"] == 1
        assert counts["redis1"]["ok"] == 5
        assert counts["worker1"]["changed"] == 2
