"""The master's host cut off from the network under a task stream (`podman network disconnect`):
the other two promote a replica and the worker follows, as after a freeze. On the cut-off side
the old master keeps running, and a client beside it (on its own host) keeps writing: a
durable publish there is never acknowledged (WAIT finds no replica), and plain writes are
refused (NOREPLICAS) once no replica has acknowledged the master for min-replicas-max-lag.
When the network comes back the old master rejoins as a replica of the new one, and what it
took while cut off is gone: every write a replica acknowledged is still there. The figures go
to build/failover.json beside the freeze's."""

from __future__ import annotations

import shlex
import subprocess
import time

from conftest import (
    ADMIN_PASSWORD,
    address,
    cli,
    finish_stream,
    master,
    on,
    record_figures,
    start_stream,
    wait_for,
    wait_promoted,
)
from test_failover import PAUSE_AFTER

STREAM_SECONDS = 40
NETWORK = "mol-ha"
PROBE_KEY = "isolation-probe"
MAX_LAG_SECONDS = 10  # redis_min_replicas_max_lag, the role's default
REFUSED_WITHIN = MAX_LAG_SECONDS + 5

# A writer beside the master, on its host: every 0.2 s one connection sends LPUSH of the next
# number and WAIT 1 500; one line per write, "<n> <LPUSH's reply> | <WAIT's reply>", until
# the stop file exists.
WRITER = r"""
i=0
while [ ! -e /tmp/isolation.stop ]; do
  reply=$(printf 'LPUSH %s %s\nWAIT 1 500\n' "$KEY" "$i" | redis-cli --no-auth-warning \
    -h 127.0.0.1 -p 6379 --tls --cacert /etc/redis/tls/ca.crt --cert /etc/redis/tls/redis.crt \
    --key /etc/redis/tls/redis.key --user admin 2>&1 | tr '\n' '|')
  echo "$i $(date +%s.%N) $reply" >>/tmp/isolation.log
  i=$((i + 1))
  sleep 0.2
done
"""


def start_writer(host: str, password: str) -> None:
    on(host).run("rm -f /tmp/isolation.stop /tmp/isolation.log")
    script = shlex.quote(WRITER)
    env = f"REDISCLI_AUTH={shlex.quote(password)} KEY={PROBE_KEY}"
    on(host).run(f"{env} nohup bash -c {script} >/dev/null 2>&1 &")


def writes(host: str) -> list[tuple[int, float, str, str]]:
    """The writer's lines: (n, when, LPUSH's reply, WAIT's reply)."""
    found = []
    for line in on(host).file("/tmp/isolation.log").content_string.splitlines():
        n, at, reply = line.split(" ", 2)
        replies = [part.strip() for part in reply.split("|") if part.strip()] + ["", ""]
        found.append((int(n), float(at), replies[0], replies[1]))
    return found


def cut_off_round() -> dict[str, object]:
    """The master's host cut off under a stream and a writer beside it, then reconnected and
    back in sync: the stream's figures and the cut-off side's."""
    label, out = start_stream(STREAM_SECONDS)
    time.sleep(PAUSE_AFTER)
    old = master()
    old_address = address(old)
    cli(old, "DEL", PROBE_KEY)
    start_writer(old, ADMIN_PASSWORD)
    time.sleep(2)  # some writes acknowledged before the cut
    subprocess.run(["podman", "network", "disconnect", NETWORK, old], check=True)
    cut_at = time.time()
    try:
        promoted_after = wait_promoted(old, old_address, cut_at)
        figures = finish_stream(label, out, STREAM_SECONDS, cut_at)
    finally:
        subprocess.run(
            ["podman", "network", "connect", "--ip", old_address, NETWORK, old], check=True
        )
    on(old).run("touch /tmp/isolation.stop")
    wait_for("the old master back as a replica", lambda: cli(old, "ROLE").startswith("slave"), 90)
    wait_for(
        "the old master in sync",
        lambda: "master_link_status:up" in cli(old, "INFO", "replication"),
        60,
    )
    new = master()
    kept = set(cli(new, "LRANGE", PROBE_KEY, "0", "-1").split())
    log = writes(old)
    acknowledged = [
        str(n) for n, _, push, wait in log if push.isdigit() and wait.isdigit() and int(wait) >= 1
    ]
    taken_cut_off = [str(n) for n, at, push, _ in log if at > cut_at and push.isdigit()]
    refused_at = [at for _, at, push, _ in log if at > cut_at and push.startswith("NOREPLICAS")]
    figures.update(
        {
            "promoted_after_seconds": round(promoted_after, 1),
            "isolated_writes_acknowledged_and_lost": len(set(acknowledged) - kept),
            "isolated_plain_writes_taken_then_lost": len(set(taken_cut_off) - kept),
            "isolated_master_refused_writes_after_seconds": (
                round(min(refused_at) - cut_at, 1) if refused_at else None
            ),
            "isolated_writes_acknowledged": len(acknowledged),
            "cut_off": old,
        }
    )
    return figures


def test_a_master_cut_off_loses_nothing_a_replica_acknowledged() -> None:
    figures = cut_off_round()
    record_figures("master host cut off", figures)
    print(f"master cut off under a stream: {figures}")
    assert figures["isolated_writes_acknowledged"], figures  # the writer worked before the cut
    assert figures["tasks_lost"] == 0, figures
    assert figures["isolated_writes_acknowledged_and_lost"] == 0, figures
    refused_after = figures["isolated_master_refused_writes_after_seconds"]
    assert isinstance(refused_after, float), figures
    assert refused_after < REFUSED_WITHIN, figures
