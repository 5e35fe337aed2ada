"""`python -m chaos.brpop_gap [--rounds N]`: cut off an idle worker and count what it loses.

The only consuming host (chaos-worker1; chaos-worker2's workers are stopped) is cut off
while its worker waits for work, and tasks are sent at once. With kombu's own Redis transport
this lost 2 of 3 tasks every round (chaos/evidence/brpop-gap-probe-2026-12-02.json): Redis
still counted the cut-off connection as a waiting BRPOP client and popped the next message
into it, and after reconnection kombu popped one more and failed to record it in `unacked`
on a pooled connection that was still stale. taskapp.broker's fetch records a message in
`unacked` in the same step that takes it, so such a message waits there for kombu's restore
instead (RELIABILITY.md). Prints one JSON line a round; `make chaos` must have deployed the
lab first. Not part of the suite: each round waits out the visibility timeout and the restore
period, too slow to repeat there.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from chaos.lab import NETWORK, UNIT, Flow, Lab, on, run

HOST, OTHER = "chaos-worker1", "chaos-worker2"


def probe(lab: Lab, i: int, sent: int = 3, cut: float = 20) -> dict[str, Any]:
    label = f"gap-{int(time.time())}"
    flow = Flow(lab.celery(), label, seconds=0.1, interval=1, prefix=f"g{i}")
    flow.send(2)  # the worker runs them and goes back to waiting in BRPOP
    lab.wait_done(label, set(flow.accepted), 60)
    time.sleep(0.3)
    run("podman", "network", "disconnect", NETWORK, HOST)
    flow.send(sent)
    time.sleep(1.5)  # longer than kombu's BRPOP timeout: every waiting BRPOP has been answered
    queued = lab.queue_length()
    time.sleep(cut)
    run("podman", "network", "connect", NETWORK, HOST)
    # Visibility timeout and restore period pass: anything in unacked would be back by then.
    waited = lab.wait_done(label, set(flow.accepted), lab.settings.celery.visibility_timeout + 120)
    lost = flow.lost_tasks(lab.entries(label))
    return {
        "sent_during_cut": sent,
        "still_queued_after_1_5_s": queued,
        "lost": len(lost),
        "lost_tasks": lost,
        "waited_s": round(waited),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    lab = Lab()
    on(OTHER, f"systemctl stop {UNIT}")
    try:
        for i in range(args.rounds):
            print(json.dumps(probe(lab, i)), flush=True)
    finally:
        on(OTHER, f"systemctl start {UNIT}")


if __name__ == "__main__":
    main()
