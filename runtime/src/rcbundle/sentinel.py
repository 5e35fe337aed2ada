"""Every Sentinel-managed connection pool of a process follows the master as soon as one does.

redis-py keeps one idea of the master per pool, updated only when that pool opens a new
connection (SentinelConnectionPoolProxy.get_master_address, which then drops the pool's idle
connections to the old master). A worker has several such pools: kombu's for commands (acks,
restores, publishes), kombu's for the poll connection, Celery's result backend (which the tasks
of the bundled app also write through). When the master's host freezes, a connection to it is
not refused: the kernel still completes the handshake and nothing answers, so each pool learns of
the new master only when one of its own idle connections has waited out its socket timeout. In
a solo-pool worker those waits come one after another (a task's result write, then its ack,
then the poll), and a failover promoted in 18 s reached the worker's first completed task after
87 s (the ha Molecule scenario).

Here, whenever any master pool of the process learns a new address from Sentinel, every other
master pool of the same master name and the same Sentinels takes that address and drops its idle
connections to the old one, as redis-py does for the pool that learnt it. Connections in use
are left alone (their command ends with its socket timeout); the consuming channels also drop
their poll connection when it still leads to an old master (rcbundle.transport), and their
keyspace subscription asks Sentinel every health_check_interval, which is what notices a move
while the process is otherwise idle.

redis-py internals relied on (rcbundle.versions refuses another redis-py series; installed by
rcbundle.transport):
SentinelConnectionPoolProxy (__init__, get_master_address, is_master, master_address,
service_name, sentinel_manager, connection_pool_ref), Sentinel.sentinels (Redis clients whose
pools' connection_kwargs hold host and port), ConnectionPool.disconnect(inuse_connections=False).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import cast

from rcbundle import versions

versions.check()  # below redis-py's public API: refuse an untested redis-py

from redis.sentinel import SentinelConnectionPoolProxy  # noqa: E402

logger = logging.getLogger(__name__)

_proxies: weakref.WeakSet[SentinelConnectionPoolProxy] = weakref.WeakSet()
_lock = threading.Lock()
_installed = False


def sentinels_of(proxy: SentinelConnectionPoolProxy) -> frozenset[tuple[str, int]]:
    """The Sentinels' addresses a pool asks (the same master name can be another group's)."""
    found = set()
    for client in getattr(proxy.sentinel_manager, "sentinels", ()):
        kwargs = client.connection_pool.connection_kwargs
        found.add((str(kwargs.get("host")), int(kwargs.get("port") or 0)))
    return frozenset(found)


def master_moved(
    origin: SentinelConnectionPoolProxy, address: tuple[str, int]
) -> list[SentinelConnectionPoolProxy]:
    """Tell every other master pool of ORIGIN's group that the master is at ADDRESS: each that
    knew another address takes this one and drops its idle connections. Returns those pools'
    proxies (for the tests)."""
    group = (origin.service_name, sentinels_of(origin))
    moved = []
    with _lock:
        proxies = list(_proxies)
    for proxy in proxies:
        if proxy is origin or not proxy.is_master or proxy.master_address is None:
            continue
        if tuple(proxy.master_address) == tuple(address):
            continue
        if (proxy.service_name, sentinels_of(proxy)) != group:
            continue
        proxy.master_address = address
        pool = proxy.connection_pool_ref()
        if pool is not None:
            pool.disconnect(inuse_connections=False)
        moved.append(proxy)
    if moved:
        logger.info(
            "rcbundle.sentinel: master %s now at %s:%s; %d more connection pools follow",
            origin.service_name,
            address[0],
            address[1],
            len(moved),
        )
    return moved


def install() -> None:
    """Make every SentinelConnectionPoolProxy of the process join the group (once)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    # Untyped in redis-py.
    original_init = cast("Callable[..., None]", SentinelConnectionPoolProxy.__init__)
    original_get = cast(
        "Callable[..., tuple[str, int]]", SentinelConnectionPoolProxy.get_master_address
    )

    def __init__(self: SentinelConnectionPoolProxy, *args: object, **kwargs: object) -> None:
        original_init(self, *args, **kwargs)
        with _lock:
            _proxies.add(self)

    def get_master_address(self: SentinelConnectionPoolProxy) -> tuple[str, int]:
        address = original_get(self)
        if self.is_master:  # a new pool can be the first to see a move, too
            master_moved(self, (address[0], int(address[1])))
        return address

    SentinelConnectionPoolProxy.__init__ = __init__  # type: ignore[method-assign]
    SentinelConnectionPoolProxy.get_master_address = get_master_address  # type: ignore[method-assign]
