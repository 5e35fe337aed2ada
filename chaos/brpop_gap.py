"""`python -m chaos.brpop_gap [--rounds N]`: cut off an idle worker and count what it loses.

The only consuming host (chaos-worker1; chaos-worker2's workers are stopped) is cut off
while its worker waits for work, and tasks are sent at once. With kombu's own Redis transport
this lost 2 of 3 tasks every round (chaos/evidence/brpop-gap-probe-2026-12-02.json): Redis
still counted the cut-off connection as a waiting BRPOP client and popped the next message
into it, and after reconnection kombu popped one more and failed to record it in `unacked`
on a pooled connection that was still stale. rcbundle's transport records a message in
`unacked`, with its owner (the node), in the same step that takes it, and the node's next
connection takes back at once what its process never received: such a message runs again
after the reconnect, not after the visibility timeout (3600 s, the lab's default), and a task
not completed within 150 s of the reconnection counts as lost (RELIABILITY.md). Prints one
JSON line a round; `make chaos` must have deployed the lab first. Experiment 7 of the suite
runs the same round twice; this repeats it as often as asked.
"""

from __future__ import annotations

import argparse
import json
import time

from chaos.experiments import idle_cuts
from chaos.lab import Lab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    for result in idle_cuts(Lab(), f"gap-{int(time.time())}", args.rounds):
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
