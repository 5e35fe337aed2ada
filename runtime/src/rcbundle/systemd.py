"""systemd readiness for the worker units: sd_notify(3)'s protocol, without libsystemd.

A solo node busy with a task cannot answer `celery inspect ping` (it runs the task in the
thread that would answer), so a ping cannot tell a long task from a dead node. systemd can:
with Type=notify and NotifyAccess=main in a worker's unit, systemd waits for READY=1, which
this module sends once the node consumes and answers remote control. Celery's worker_ready
signal comes too early for that: it fires just before the worker's event loop starts, and
kombu's Redis transport subscribes to the remote-control (pidbox) channel only in the loop's
first tick, so a `celery inspect ping` published in between is never heard. READY=1 is
therefore sent from the loop itself, on its second pass, after that first tick has subscribed.
`systemctl start` and `restart` then return only once the node consumes and answers, and
`systemctl is-active` is the deploy's health check, whatever the node is running.
worker_shutting_down sends STOPPING=1.

rcbundle.loader connects this in `celery worker` main processes only (Celery's celeryd_init
signal, which no other process sends: not beat, not prefork's children, not a producer), once
per process however many apps or loaders it makes. Without $NOTIFY_SOCKET (not started by
systemd, or by a unit that is not Type=notify) it sends nothing.
"""

import logging
import os
import socket
from collections.abc import Mapping

from celery import signals

ENV_VAR = "NOTIFY_SOCKET"
READY = "READY=1"
STOPPING = "STOPPING=1"

logger = logging.getLogger(__name__)


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send state (such as READY=1) to $NOTIFY_SOCKET; False, sending nothing, if it is unset.

    The socket is an AF_UNIX datagram socket: a path, or an abstract name when it starts with
    '@'. Raises OSError if systemd's socket does not take the datagram.
    """
    address = (os.environ if environ is None else environ).get(ENV_VAR, "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        raise OSError(f"{ENV_VAR}={address!r}: not an AF_UNIX socket path or abstract name")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(state.encode(), address)
    return True


def _send(state: str) -> None:
    try:
        notify(state)
    except OSError as exc:
        # systemd then fails the start after TimeoutStartSec, which says more than a crash here.
        logger.warning("rcbundle.systemd: could not send %s to systemd: %s", state, exc)


def _on_ready(sender: object = None, **_: object) -> None:
    hub = getattr(sender, "hub", None)  # the worker's Consumer; no hub without an event loop
    if hub is None:
        _send(READY)
        return
    # Celery calls this just before its loop starts. The loop runs what call_soon queued, then
    # its tick callbacks (kombu's transport subscribes there), then polls: queued from the
    # first pass, READY=1 goes out at the start of the second, after the subscription was sent.
    hub.call_soon(lambda: hub.call_soon(lambda: _send(READY)))


def _on_shutting_down(**_: object) -> None:
    _send(STOPPING)


def connect() -> None:
    """Send READY=1 on worker_ready and STOPPING=1 on worker_shutting_down (once per process)."""
    signals.worker_ready.connect(_on_ready, weak=False, dispatch_uid="rcbundle.systemd.ready")
    signals.worker_shutting_down.connect(
        _on_shutting_down, weak=False, dispatch_uid="rcbundle.systemd.stopping"
    )


def _on_worker_init(**_: object) -> None:
    connect()


def connect_in_workers() -> None:
    """connect() in the main process of `celery worker`, when it starts; nowhere else."""
    signals.celeryd_init.connect(
        _on_worker_init, weak=False, dispatch_uid="rcbundle.systemd.worker"
    )
