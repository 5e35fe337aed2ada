"""`python -m taskapp smoke|ping-workers`: checks after a deploy."""

import argparse
import sys
from collections.abc import Sequence

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from rcbundle import ConfigError, configure
from taskapp.app import app
from taskapp.smoke import ping_workers, run_smoke

# What an unreachable or misconfigured Redis raises: kombu for the broker, redis-py and Celery's
# own RuntimeError (after it gives up reconnecting) for the result backend.
_CONNECTION_ERRORS = (OperationalError, RedisError, OSError, RuntimeError)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m taskapp", description="Reads the config from $RCBUNDLE_CONFIG."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    smoke = commands.add_parser("smoke", help="round-trip a ping and process_data tasks")
    smoke.add_argument("--count", type=_non_negative, default=3, help="process_data tasks")
    smoke.add_argument("--timeout", type=float, default=30.0, help="seconds for all results")
    smoke.add_argument("--queue", help="queue to send to (default: celery.default_queue)")
    ping = commands.add_parser("ping-workers", help="list the workers answering a control ping")
    ping.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for replies")
    args = parser.parse_args(argv)

    try:
        configure(app)  # the one line a producer of any app adds
        if args.command == "smoke":
            ok = run_smoke(args.count, args.timeout, args.queue)
        else:
            ok = ping_workers(args.timeout)
    except ConfigError as exc:
        print(f"taskapp: {exc}", file=sys.stderr)
        return 2
    except _CONNECTION_ERRORS as exc:
        cause = exc.__cause__
        detail = f" ({cause})" if cause and str(cause) != str(exc) else ""
        print(f"taskapp {args.command}: cannot reach Redis: {exc}{detail}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
