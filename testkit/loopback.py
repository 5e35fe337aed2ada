"""A real redis-server (and Sentinel) on loopback for the runtime's and the app's tests, stopped
on exit even when a test fails, and the helpers that start and stop their other processes."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

# Characters that break an unquoted redis:// URL, so the quoting is proven end to end.
PASSWORD = "it:p@ss/w#rd%"
STARTUP_SECONDS = 20


@dataclass(frozen=True)
class RedisServer:
    port: int
    password: str

    def client(self, password: str | None = None, db: int = 0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=password, db=db, decode_responses=True
        )


# What the redis role sets on the broker: keyspace events (K) for list commands (l), which
# rcbundle.transport's consumers wake on.
NOTIFY_KEYSPACE_EVENTS = "Kl"


def _binary() -> str:
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/usr/bin")
    if binary is None:
        pytest.fail(
            "redis-server not found on PATH: the integration tests need a real one "
            "(Debian: apt-get install redis-server)"
        )
    return binary


@contextlib.contextmanager
def run_redis(workdir: Path, replica_of: RedisServer | None = None) -> Iterator[RedisServer]:
    """A redis-server with requirepass; with replica_of, a replica of that server."""
    server = RedisServer(port=free_port(), password=PASSWORD)
    log = workdir / f"redis-{server.port}.log"
    args = [_binary(), "--bind", "127.0.0.1", "--port", str(server.port), "--dir", str(workdir)]
    args += ["--requirepass", PASSWORD, "--save", "", "--appendonly", "no"]
    args += ["--maxmemory-policy", "noeviction", "--logfile", str(log), "--daemonize", "no"]
    if replica_of is not None:
        args += ["--replicaof", "127.0.0.1", str(replica_of.port), "--masterauth", PASSWORD]
    proc = subprocess.Popen(args, start_new_session=True)
    try:
        wait_until("redis-server", lambda: _answers(server), proc, log)
        server.client(PASSWORD).config_set("notify-keyspace-events", NOTIFY_KEYSPACE_EVENTS)
        yield server
    finally:
        stop(proc, timeout=10)


@contextlib.contextmanager
def run_sentinel(workdir: Path, master: RedisServer, name: str) -> Iterator[int]:
    """One Sentinel on loopback monitoring master as name (quorum 1); yields its port."""
    port = free_port()
    config = workdir / f"sentinel-{port}.conf"  # Sentinel rewrites its own config file
    log = workdir / f"sentinel-{port}.log"
    config.write_text(
        f"bind 127.0.0.1\nport {port}\ndir {workdir}\nlogfile {log}\n"
        f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n"
        f'sentinel auth-pass {name} "{master.password}"\n'
        f"sentinel down-after-milliseconds {name} 5000\n"
        f"sentinel failover-timeout {name} 10000\n"
    )
    proc = subprocess.Popen([_binary(), str(config), "--sentinel"], start_new_session=True)
    sentinel = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)

    def knows_master() -> bool:
        try:
            return bool(sentinel.sentinel_get_master_addr_by_name(name))
        except redis.RedisError:
            return False

    try:
        wait_until("redis-sentinel", knows_master, proc, log)
        yield port
    finally:
        sentinel.close()
        stop(proc, timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(server: RedisServer) -> bool:
    try:
        return bool(server.client(server.password).ping())
    except redis.ConnectionError:
        return False


def wait_until(
    what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        if ready():
            return
        time.sleep(0.2)
    pytest.fail(f"{what} not ready after {STARTUP_SECONDS} s:\n{tail(log)}")


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


def stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # Each process leads its own group (start_new_session): this also reaps orphaned children.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
