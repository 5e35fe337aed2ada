"""A replicated group's restarts in turn (roles/redis/filter_plugins/redis_restart.py): the order
the servers restart in, and when a replica counts as back (read from INFO replication)."""

from __future__ import annotations

import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "roles/redis/filter_plugins"))
from redis_restart import (  # the role's plugin, not installed
    bundle_redis_failed_turns,
    follows,
    info_fields,
    new_master,
    replica_caught_up,
    replicas_caught_up,
    restart_plan,
)

HOSTS = ["r1", "r2", "r3"]


def pending(*hosts: str) -> dict[str, dict[str, object]]:
    return {host: {"redis__restart_pending": host in hosts} for host in HOSTS}


def master_info(offset: int, *replica_offsets: int, state: str = "online") -> str:
    lines = ["# Replication", "role:master", f"connected_slaves:{len(replica_offsets)}"]
    lines += [
        f"slave{i}:ip=10.0.0.{i + 2},port=6379,state={state},offset={o},lag=0"
        for i, o in enumerate(replica_offsets)
    ]
    lines += ["master_replid:abc", f"master_repl_offset:{offset}", ""]
    return "\r\n".join(lines)


def replica_info(offset: int, link: str = "up", syncing: int = 0) -> str:
    return "\r\n".join(
        [
            "# Replication",
            "role:slave",
            "master_host:10.0.0.1",
            "master_port:6379",
            f"master_link_status:{link}",
            f"master_sync_in_progress:{syncing}",
            f"slave_repl_offset:{offset}",
            "",
        ]
    )


def test_the_replicas_restart_before_the_master_in_the_plays_order() -> None:
    plan = restart_plan(HOSTS, pending(*HOSTS), "r2")
    assert plan == {"replicas": ["r1", "r3"], "master": "r2"}


def test_only_the_servers_that_need_it_restart() -> None:
    assert restart_plan(HOSTS, pending("r3"), "r1") == {"replicas": ["r3"], "master": ""}
    assert restart_plan(HOSTS, pending("r1"), "r1") == {"replicas": [], "master": "r1"}
    assert restart_plan(HOSTS, pending(), "r1") == {"replicas": [], "master": ""}


def test_a_host_without_the_fact_needs_no_restart() -> None:
    # The fact is set by a handler only on hosts that were notified.
    assert restart_plan(HOSTS, {host: {} for host in HOSTS}, "r1") == {
        "replicas": [],
        "master": "",
    }


def test_info_fields_skip_headers() -> None:
    assert info_fields("# Replication\r\nrole:master\r\n\r\n") == {"role": "master"}


def test_the_replicas_are_caught_up_when_each_holds_the_masters_offset() -> None:
    assert replicas_caught_up(master_info(500, 500, 500))


@pytest.mark.parametrize(
    "info",
    [
        master_info(500, 500, 499),  # one replica behind: a write only the master holds
        master_info(500),  # no replica to hand the role to
        master_info(500, 500, 500, state="wait_bgsave"),  # one still syncing
        replica_info(500),  # not a master
        "",
    ],
)
def test_the_replicas_are_not_caught_up_otherwise(info: str) -> None:
    assert not replicas_caught_up(info)


def test_a_replica_is_back_when_linked_and_holding_what_the_master_held() -> None:
    assert replica_caught_up(replica_info(500), master_info(500, 500))
    assert replica_caught_up(replica_info(600), master_info(500, 500))  # moved on since


@pytest.mark.parametrize(
    "info",
    [
        replica_info(400),  # behind
        replica_info(500, link="down"),
        replica_info(500, syncing=1),
        master_info(500, 500),  # came back as a master
        "",
    ],
)
def test_a_replica_is_not_back_otherwise(info: str) -> None:
    assert not replica_caught_up(info, master_info(500, 500))


def test_a_server_follows_the_address_it_replicates_from_with_its_link_up() -> None:
    assert follows(replica_info(1), "10.0.0.1")
    assert not follows(replica_info(1), "10.0.0.2")
    assert not follows(replica_info(1, link="down"), "10.0.0.1")
    assert not follows(master_info(1, 1), "10.0.0.1")


OLD = "10.0.0.1"


def test_the_new_master_is_the_one_every_sentinel_names() -> None:
    assert new_master([["10.0.0.2", "6379"]] * 3, OLD) == ["10.0.0.2", "6379"]
    assert new_master([["10.0.0.3", "6379"]], OLD) == ["10.0.0.3", "6379"]  # one Sentinel asked


@pytest.mark.parametrize(
    "answers",
    [
        [["10.0.0.1", "6379"]] * 3,  # nobody switched yet
        [["10.0.0.2", "6379"], ["10.0.0.1", "6379"], ["10.0.0.2", "6379"]],  # one still old
        [["10.0.0.2", "6379"], [], ["10.0.0.2", "6379"]],  # one did not answer
        [["10.0.0.2", "6379"], ["10.0.0.3", "6379"], ["10.0.0.2", "6379"]],  # two views
        [["ERR no such master with that name"]],  # not an address and a port
        [],
    ],
)
def test_no_new_master_until_every_sentinel_agrees(answers: list[list[str]]) -> None:
    assert new_master(answers, OLD) == []


def test_the_failed_turns_are_what_each_failed_server_noted_in_the_plays_order() -> None:
    hostvars: dict[str, dict[str, object]] = {
        "r1": {},
        "r2": {"redis__turn_failed": "redis-server on r2 did not come back"},
        "r3": {"redis__turn_failed": ""},
    }
    assert bundle_redis_failed_turns(HOSTS, hostvars) == ["redis-server on r2 did not come back"]
    assert bundle_redis_failed_turns(["r1", "r3"], hostvars) == []
