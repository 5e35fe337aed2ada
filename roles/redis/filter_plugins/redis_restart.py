"""A replicated group's restarts in turn (tasks/restart_in_turn.yml): which servers restart, in
what order, and when one is back in the group (read from INFO replication).

The replicas that need a restart go first, one at a time; the master last, after a planned
switchover made it a replica (tasks/switchover.yml). A host needs a restart when the role's
handlers noted one (redis__restart_pending, handlers/main.yml).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

# slave0:ip=10.0.0.2,port=6379,state=online,offset=1234,lag=0
REPLICA_LINE = re.compile(r"slave\d+:(?P<fields>.*)")


def restart_plan(
    hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]], master: str
) -> dict[str, Any]:
    """The restarts in turn: replicas (in the play's order, the master left out) and the master
    ("" when it needs none). hosts: the play's hosts, all of the group."""
    pending = [host for host in hosts if hostvars[host].get("redis__restart_pending")]
    return {
        "replicas": [host for host in pending if host != master],
        "master": master if master in pending else "",
    }


def bundle_redis_restart_plan(
    hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]], master: str
) -> dict[str, Any]:
    """Filter: ansible_play_hosts | bundle_redis_restart_plan(hostvars, redis__master)."""
    return restart_plan(list(hosts), hostvars, master)


def bundle_redis_failed_turns(
    hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Filter: ansible_play_hosts | bundle_redis_failed_turns(hostvars). What each server that
    did not come back from its restart in turn noted on its host (redis__turn_failed,
    tasks/restart_one.yml), in the play's order."""
    return [
        str(hostvars[host]["redis__turn_failed"])
        for host in hosts
        if hostvars[host].get("redis__turn_failed")
    ]


def info_fields(info: str) -> dict[str, str]:
    """INFO's `name:value` lines as a mapping (section headers and blank lines left out)."""
    fields: dict[str, str] = {}
    for line in info.splitlines():
        name, colon, value = line.strip().partition(":")
        if colon and not name.startswith("#"):
            fields[name] = value
    return fields


def replica_offsets(info: str) -> list[int]:
    """The offsets a master's INFO replication reports for its online replicas."""
    offsets = []
    for line in info.splitlines():
        match = REPLICA_LINE.fullmatch(line.strip())
        if not match:
            continue
        fields = dict(part.partition("=")[::2] for part in match["fields"].split(","))
        if fields.get("state") == "online" and fields.get("offset", "").isdigit():
            offsets.append(int(fields["offset"]))
    return offsets


def replicas_caught_up(info: str) -> bool:
    """Whether a master (INFO replication) has at least one online replica and every replica
    acknowledged all it holds: no write of it exists on the master alone."""
    fields = info_fields(info)
    offsets = replica_offsets(info)
    connected = fields.get("connected_slaves", "0")
    return (
        fields.get("role") == "master"
        and bool(offsets)
        and connected.isdigit()
        and len(offsets) == int(connected)
        and all(str(offset) == fields.get("master_repl_offset") for offset in offsets)
    )


def bundle_redis_replicas_caught_up(info: str) -> bool:
    """Filter: master_info.stdout | bundle_redis_replicas_caught_up."""
    return replicas_caught_up(str(info))


def replica_caught_up(info: str, master_info: str) -> bool:
    """Whether a replica (INFO replication) is linked to its master and holds what the master
    held when it was read (master_info, read after the replica came back)."""
    fields, master = info_fields(info), info_fields(master_info)
    offset, wanted = fields.get("slave_repl_offset", ""), master.get("master_repl_offset", "")
    return (
        fields.get("role") == "slave"
        and fields.get("master_link_status") == "up"
        and fields.get("master_sync_in_progress", "0") == "0"
        and offset.isdigit()
        and wanted.isdigit()
        and int(offset) >= int(wanted)
    )


def bundle_redis_replica_caught_up(info: str, master_info: str) -> bool:
    """Filter: replica_info.stdout | bundle_redis_replica_caught_up(master_info.stdout)."""
    return replica_caught_up(str(info), str(master_info))


def follows(info: str, address: str) -> bool:
    """Whether a server (INFO replication) is a replica of ADDRESS with its link up."""
    fields = info_fields(info)
    return (
        fields.get("role") == "slave"
        and fields.get("master_host") == address
        and fields.get("master_link_status") == "up"
    )


def new_master(answers: Sequence[Sequence[str]], old: str) -> list[str]:
    """The master the Sentinels asked name after a switchover from OLD (address), as
    [address, port], once every one of them names the same one; [] until then. answers: each
    Sentinel's GET-MASTER-ADDR-BY-NAME reply lines (empty for one that did not answer). A
    Sentinel names the new master only once the promoted replica is one."""
    named = [list(a) for a in answers if len(a) == 2 and a[0] != old]
    if not named or len(named) != len(answers) or any(a != named[0] for a in named):
        return []
    return named[0]


def bundle_redis_new_master(results: Sequence[Mapping[str, Any]], old: str) -> list[str]:
    """Filter: registered_loop.results (or [registered]) | bundle_redis_new_master(address)."""
    return new_master([list(r.get("stdout_lines") or []) for r in results], str(old))


def bundle_redis_follows(info: str, address: str) -> bool:
    """Filter: info.stdout | bundle_redis_follows(master address)."""
    return follows(str(info), str(address))


class FilterModule:
    """A replicated group's restarts in turn."""

    def filters(self) -> dict[str, Any]:
        return {
            "bundle_redis_restart_plan": bundle_redis_restart_plan,
            "bundle_redis_failed_turns": bundle_redis_failed_turns,
            "bundle_redis_replicas_caught_up": bundle_redis_replicas_caught_up,
            "bundle_redis_replica_caught_up": bundle_redis_replica_caught_up,
            "bundle_redis_follows": bundle_redis_follows,
            "bundle_redis_new_master": bundle_redis_new_master,
        }
