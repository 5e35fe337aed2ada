"""rcbundle.systemd: sd_notify's protocol against real unix datagram sockets."""

import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rcbundle import systemd

CONFIG = '[redis]\nhost = "redis9"\npassword = "pw"\n'


def received(sock: socket.socket) -> list[str]:
    """The datagrams waiting on sock, without waiting for more."""
    sock.setblocking(False)
    out: list[str] = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


@pytest.fixture
def path_socket() -> Iterator[tuple[str, socket.socket]]:
    # A short directory: a unix socket path must fit in 108 bytes, pytest's tmp_path may not.
    with (
        tempfile.TemporaryDirectory(prefix="rcb") as directory,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
    ):
        path = os.path.join(directory, "notify")
        sock.bind(path)
        yield path, sock


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"rcbundle-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        yield "@" + name, sock


def test_notify_sends_one_datagram_to_a_socket_path(
    path_socket: tuple[str, socket.socket],
) -> None:
    address, sock = path_socket
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": address}) is True
    assert received(sock) == ["READY=1"]


def test_notify_sends_to_an_abstract_socket_named_with_an_at_sign(
    abstract_socket: tuple[str, socket.socket],
) -> None:
    address, sock = abstract_socket
    assert systemd.notify("STOPPING=1", {"NOTIFY_SOCKET": address}) is True
    assert received(sock) == ["STOPPING=1"]


def test_notify_reads_the_environment(
    abstract_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, sock = abstract_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert systemd.notify("READY=1") is True
    assert received(sock) == ["READY=1"]


def test_without_a_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": ""}) is False


def test_a_socket_nobody_listens_on_is_an_error() -> None:
    with pytest.raises(ConnectionRefusedError):
        systemd.notify("READY=1", {"NOTIFY_SOCKET": f"@rcbundle-absent-{uuid.uuid4().hex}"})
    with pytest.raises(OSError, match="not an AF_UNIX socket"):
        systemd.notify("READY=1", {"NOTIFY_SOCKET": "relative/path"})


def _run_with_loader(
    program: str, address: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    env = os.environ | {"NOTIFY_SOCKET": address, "RCBUNDLE_CONFIG": str(config)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(program)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_loader_connects_it_once_in_a_worker_process(
    abstract_socket: tuple[str, socket.socket], tmp_path: Path
) -> None:
    address, sock = abstract_socket
    # What `celery worker` sends, in a process with two apps on rcbundle's loader.
    done = _run_with_loader(
        """
        from celery import Celery, signals
        apps = [Celery(n, loader="rcbundle.loader:Loader", set_as_current=False) for n in "ab"]
        for app in apps:
            app.loader.init_worker()
            signals.celeryd_init.send(sender="w@h", instance=None, conf=app.conf, options={})
        signals.worker_ready.send(sender=None)
        signals.worker_shutting_down.send(sender="w@h", sig="SIGTERM", how="Warm", exitcode=0)
        """,
        address,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert received(sock) == ["READY=1", "STOPPING=1"]


def test_the_loader_connects_nothing_in_other_processes(
    abstract_socket: tuple[str, socket.socket], tmp_path: Path
) -> None:
    address, sock = abstract_socket
    # A producer, or beat (which also runs the loader's init_worker), never sends celeryd_init.
    done = _run_with_loader(
        """
        from celery import Celery, signals
        app = Celery("a", loader="rcbundle.loader:Loader", set_as_current=False)
        app.loader.init_worker()
        signals.worker_ready.send(sender=None)
        signals.worker_shutting_down.send(sender="w@h", sig="SIGTERM", how="Warm", exitcode=0)
        """,
        address,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert received(sock) == []


def test_a_failed_notification_does_not_stop_the_worker(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", f"@rcbundle-absent-{uuid.uuid4().hex}")
    systemd._on_ready()
    assert "could not send READY=1 to systemd" in caplog.text


def test_ready_waits_for_the_event_loop_tick_that_subscribes_to_remote_control(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from kombu.asynchronous import Hub

    # kombu's Redis transport sends its pidbox PSUBSCRIBE from a tick callback of the worker's
    # hub: a READY=1 sent before the first tick would let a ping go unheard.
    events: list[str] = []
    monkeypatch.setattr(systemd, "_send", lambda state: events.append(state))
    hub = Hub()
    hub.on_tick.add(lambda: events.append("tick"))  # type: ignore[attr-defined]  # a set in kombu 5.7; celery-types says list
    try:
        systemd._on_ready(sender=SimpleNamespace(hub=hub))  # what Celery sends, before the loop
        assert events == []
        loop = hub.create_loop()
        for _ in range(3):
            next(loop)
        assert events[:3] == ["tick", "READY=1", "tick"]
    finally:
        hub.close()


def test_without_an_event_loop_ready_is_sent_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(systemd, "_send", lambda state: events.append(state))
    systemd._on_ready(sender=object())
    assert events == ["READY=1"]
