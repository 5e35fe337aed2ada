#!/usr/bin/python3
"""Run by the redis-server unit before the server starts (ExecStartPre, the bundle's redis role,
replicated groups only): the server starts in the place the group's Sentinel gives it now.

The role writes the server's place (the replicaof file redis.conf includes) at each deploy,
but Sentinel moves servers between deploys, live, and cannot write that file (the server's
configuration is read-only to it). Without this a master promoted by a failover that then
restarted (a crash, systemd's Restart=always) came back as a replica of the old master, and
the group had no master until the Sentinels gave up on it: down-after plus 20 s of refused
writes, measured by make chaos-ha.

The local Sentinel is asked with the login it uses towards its peers (its own config file).
When it does not answer (the host starting, a group being set up) the file is kept as it is.
Whatever happens, the server starts: this never fails.

Usage: follow_sentinel.py SETTINGS.json (written by the role: this server's address and port,
the Sentinel's port, master name and config file, the replicaof file, redis-cli's TLS flags).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

MASTER_LINE = "# The master."  # the role's template writes it for the master


def credentials(sentinel_config: str) -> tuple[str, str] | None:
    """The user and password a Sentinel logs in to its peers with (sentinel-user and
    sentinel-pass in its config file), or None."""
    found: dict[str, str] = {}
    for line in sentinel_config.splitlines():
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        if (
            len(words) == 3
            and words[0] == "sentinel"
            and words[1] in ("sentinel-user", "sentinel-pass")
        ):
            found[words[1]] = words[2]
    user, password = found.get("sentinel-user"), found.get("sentinel-pass")
    return (user, password) if user and password else None


def placed(current: str, master: Sequence[str], me: Sequence[str]) -> str:
    """The replicaof file's text for a server at ME (address, port) whose master is MASTER:
    its comment lines kept, then the master's mark or its replicaof line."""
    lines = [line for line in current.splitlines() if line.startswith("#") and line != MASTER_LINE]
    lines.append(MASTER_LINE if list(master) == list(me) else f"replicaof {master[0]} {master[1]}")
    return "\n".join(lines) + "\n"


def ask_sentinel(settings: dict[str, object], login: tuple[str, str]) -> list[str] | None:
    """SENTINEL GET-MASTER-ADDR-BY-NAME to the local Sentinel: [address, port], or None."""
    tls = settings["tls"]
    assert isinstance(tls, list)
    argv = [
        "redis-cli",
        "--no-auth-warning",
        "-h",
        "127.0.0.1",
        "-p",
        str(settings["sentinel_port"]),
    ]
    argv += [str(flag) for flag in tls]
    argv += [
        "--user",
        login[0],
        "SENTINEL",
        "GET-MASTER-ADDR-BY-NAME",
        str(settings["master_name"]),
    ]
    env = {"PATH": "/usr/bin:/bin", "REDISCLI_AUTH": login[1]}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=5, check=False)
    answer = done.stdout.split()
    return answer if done.returncode == 0 and len(answer) == 2 else None


def write_keeping_owner(path: Path, text: str) -> None:
    """PATH replaced by TEXT at once, with its owner and mode."""
    status = path.stat()
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            os.fchmod(out.fileno(), status.st_mode & 0o7777)
            os.fchown(out.fileno(), status.st_uid, status.st_gid)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def follow(
    settings: dict[str, object],
    ask: Callable[[dict[str, object], tuple[str, str]], list[str] | None] = ask_sentinel,
) -> str:
    """Put the replicaof file where the local Sentinel says; what was done, in words."""
    sentinel_config = Path(str(settings["sentinel_config"]))
    replicaof = Path(str(settings["replicaof_file"]))
    login = credentials(sentinel_config.read_text()) if sentinel_config.exists() else None
    if login is None or not replicaof.exists():
        return "no Sentinel set up here: the replicaof file is kept"
    master = ask(settings, login)
    if master is None:
        return "the local Sentinel did not answer: the replicaof file is kept"
    current = replicaof.read_text()
    wanted = placed(current, master, [str(settings["address"]), str(settings["port"])])
    if wanted == current:
        return f"already where Sentinel puts it (master {master[0]}:{master[1]})"
    write_keeping_owner(replicaof, wanted)
    return f"moved where Sentinel puts it (master {master[0]}:{master[1]})"


def main(argv: Sequence[str]) -> int:
    try:
        print(f"follow_sentinel: {follow(json.loads(Path(argv[1]).read_text()))}")
    except Exception as exc:  # the server starts whatever happens here
        print(
            f"follow_sentinel: {type(exc).__name__}: {exc}; the replicaof file is kept",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
