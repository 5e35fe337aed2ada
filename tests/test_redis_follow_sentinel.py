"""The redis role's ExecStartPre for replicated groups (roles/redis/files/usr/local/lib/
redis-bundle/follow_sentinel.py): a server starts where the local Sentinel puts it now, and
starts as before whenever Sentinel cannot say."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from conftest import REPO

SCRIPT = REPO / "roles/redis/files/usr/local/lib/redis-bundle/follow_sentinel.py"
sys.path.insert(0, str(SCRIPT.parent))
import follow_sentinel  # noqa: E402  (the role's script, not an installed module)

HEADER = (
    "#\n# Ansible managed\n#\n# Where this server stands in group redis when it starts. The role\n"
    "# writes what Sentinel reported on its last run; a change here restarts nothing.\n"
)
AS_MASTER = HEADER + "# The master.\n"
AS_REPLICA = HEADER + "replicaof 10.0.0.1 6379\n"
SENTINEL_CONF = (
    "# sentinel sentinel-pass commented-out\n"
    'user default off\nsentinel sentinel-user sentinel\nsentinel sentinel-pass "p\\"w d"\n'
    "sentinel monitor bundle 10.0.0.1 6379 2\n"
)


def settings(tmp_path: Path, replicaof: str | None, sentinel: str | None) -> dict[str, object]:
    if replicaof is not None:
        (tmp_path / "replicaof.conf").write_text(replicaof)
        (tmp_path / "replicaof.conf").chmod(0o640)
    if sentinel is not None:
        (tmp_path / "sentinel.conf").write_text(sentinel)
    return {
        "address": "10.0.0.2",
        "port": 6379,
        "sentinel_port": 26379,
        "master_name": "bundle",
        "sentinel_config": str(tmp_path / "sentinel.conf"),
        "replicaof_file": str(tmp_path / "replicaof.conf"),
        "tls": ["--tls", "--cacert", "/etc/redis/tls/ca.crt"],
    }


def test_the_login_is_the_one_sentinel_uses_towards_its_peers() -> None:
    assert follow_sentinel.credentials(SENTINEL_CONF) == ("sentinel", 'p"w d')
    assert follow_sentinel.credentials("sentinel monitor bundle 10.0.0.1 6379 2\n") is None


@pytest.mark.parametrize(
    ("current", "master", "wanted"),
    [
        (AS_REPLICA, ["10.0.0.2", "6379"], AS_MASTER),  # promoted since the last deploy
        (AS_MASTER, ["10.0.0.1", "6379"], AS_REPLICA),  # demoted since
        (AS_REPLICA, ["10.0.0.1", "6379"], AS_REPLICA),
        (AS_MASTER, ["10.0.0.2", "6379"], AS_MASTER),
        (HEADER + "replicaof 10.0.0.3 6379\n", ["10.0.0.1", "6379"], AS_REPLICA),
    ],
)
def test_the_file_says_what_sentinel_says_as_the_roles_template_would(
    current: str, master: list[str], wanted: str
) -> None:
    assert follow_sentinel.placed(current, master, ["10.0.0.2", "6379"]) == wanted


def test_a_promoted_master_is_written_back_as_the_master_keeping_owner_and_mode(
    tmp_path: Path,
) -> None:
    given = settings(tmp_path, AS_REPLICA, SENTINEL_CONF)
    asked: list[object] = []

    def ask(s: dict[str, object], login: tuple[str, str]) -> list[str]:
        asked.append((s["sentinel_port"], s["master_name"], login))
        return ["10.0.0.2", "6379"]

    said = follow_sentinel.follow(given, ask)
    assert said.startswith("moved where Sentinel puts it")
    assert (tmp_path / "replicaof.conf").read_text() == AS_MASTER
    assert stat.S_IMODE((tmp_path / "replicaof.conf").stat().st_mode) == 0o640
    assert (tmp_path / "replicaof.conf").stat().st_uid == os.getuid()
    assert asked == [(26379, "bundle", ("sentinel", 'p"w d'))]
    assert follow_sentinel.follow(given, ask).startswith("already where Sentinel puts it")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replicaof.conf", "sentinel.conf"]


@pytest.mark.parametrize(
    ("sentinel", "answer", "said"),
    [
        (None, ["10.0.0.2", "6379"], "no Sentinel set up here"),
        ("sentinel monitor mymaster 127.0.0.1 6379 2\n", ["10.0.0.2", "6379"], "no Sentinel"),
        (SENTINEL_CONF, None, "the local Sentinel did not answer"),
    ],
)
def test_without_an_answer_the_file_is_kept(
    tmp_path: Path, sentinel: str | None, answer: list[str] | None, said: str
) -> None:
    given = settings(tmp_path, AS_REPLICA, sentinel)
    assert follow_sentinel.follow(given, lambda s, login: answer).startswith(said)
    assert (tmp_path / "replicaof.conf").read_text() == AS_REPLICA


def test_the_script_never_stops_a_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # No redis-cli answers here (no Sentinel on that port): kept, exit 0.
    path = tmp_path / "settings.json"
    path.write_text(
        json.dumps(settings(tmp_path, AS_REPLICA, SENTINEL_CONF) | {"sentinel_port": 1})
    )
    assert follow_sentinel.main([str(SCRIPT), str(path)]) == 0
    assert follow_sentinel.main([str(SCRIPT), str(tmp_path / "missing.json")]) == 0
    out = capsys.readouterr()
    assert "the replicaof file is kept" in out.out + out.err
    assert "FileNotFoundError" in out.err
    assert (tmp_path / "replicaof.conf").read_text() == AS_REPLICA
