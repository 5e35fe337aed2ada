"""The fault-injection suite's pure parts (counting, statistics, report), without a lab."""

from __future__ import annotations

import json

from celery import Celery

from chaos.accounting import (
    Entry,
    Event,
    completed,
    first_start,
    interrupted_by,
    never_completed,
    parse_entries,
    percentile,
    redelivery_delays,
    running_at,
    summary,
    tally,
)
from chaos.lab import Flow
from chaos.report import (
    headline,
    render,
    render_failover,
    render_ha_experiments,
    render_safe_deploys,
)

W1, W2 = "default@chaos-worker1", "default@chaos-worker2"


def e(key: str, execution: str, worker: str, phase: str, at: float) -> Entry:
    return Entry(key=key, execution=execution, worker=worker, phase=phase, at=at)


# k1 ran once; k2 was killed on worker1 at 12 and ran again on worker2; k3 ran twice in full;
# k4 was never run; k9 ran though its send was refused.
ENTRIES = [
    e("k1", "a", W1, "start", 10.0),
    e("k1", "a", W1, "done", 13.0),
    e("k2", "b", W1, "start", 11.0),
    e("k2", "c", W2, "start", 50.0),
    e("k2", "c", W2, "done", 53.0),
    e("k3", "d", W2, "start", 20.0),
    e("k3", "d", W2, "done", 23.0),
    e("k3", "e", W1, "start", 60.0),
    e("k3", "e", W1, "done", 63.0),
    e("k9", "f", W2, "start", 70.0),
    e("k9", "f", W2, "done", 70.5),
]
KILL = Event("chaos-worker1", 12.0)


def test_tally_counts_lost_duplicates_interrupted_and_unaccepted() -> None:
    t = tally({"k1", "k2", "k3", "k4"}, ENTRIES)
    assert t.as_dict() == {
        "accepted": 4,
        "executed": 3,
        "lost": 1,
        "duplicates": 1,
        "duplicate_keys": 1,
        "interrupted": 1,
        "unaccepted_executed": 1,
    }


def test_the_lost_keys_are_named() -> None:
    assert never_completed({"k1", "k2", "k3", "k4"}, ENTRIES) == ["k4"]
    assert never_completed({"k1"}, ENTRIES) == []


def test_a_clean_run_counts_nothing_bad() -> None:
    t = tally({"k1"}, ENTRIES[:2])
    assert (t.lost, t.duplicates, t.interrupted) == (0, 0, 0)


def test_redelivery_is_measured_from_the_event_that_interrupted_the_execution() -> None:
    other_host = Event("chaos-worker2", 11.5)
    earlier = Event("chaos-worker1", 5.0)  # before the execution started: not its cause
    assert interrupted_by(ENTRIES, [earlier, other_host, KILL]) == [(KILL, ENTRIES[2])]
    assert redelivery_delays(ENTRIES, [earlier, other_host, KILL]) == [38.0]


def test_a_kill_of_one_node_interrupts_only_that_node() -> None:
    # Two solo nodes on one host: a kill of default-2 is not the cause of default's loss.
    other_node = Event("chaos-worker1", 12.0, worker="default-2@chaos-worker1")
    assert interrupted_by(ENTRIES, [other_node]) == []
    node = Event("chaos-worker1", 12.0, worker=W1)
    assert interrupted_by(ENTRIES, [other_node, node]) == [(node, ENTRIES[2])]
    assert redelivery_delays(ENTRIES, [node]) == [38.0]


def test_an_interrupted_execution_never_run_again_has_no_delay() -> None:
    assert redelivery_delays(ENTRIES[:3], [KILL]) == []


def test_running_at_and_completed_judge_a_warm_stop() -> None:
    assert running_at(ENTRIES, "chaos-worker1", 12.0) == ["a", "b"]
    assert completed(ENTRIES, ["a", "b"], by=13.0) == 1
    assert completed(ENTRIES, ["a", "b"], by=12.9) == 0
    assert first_start(ENTRIES, "chaos-worker1", after=12.0) == 60.0
    assert first_start(ENTRIES, "chaos-worker1", after=61.0) is None


def test_parse_entries_reads_what_record_work_writes() -> None:
    raw = json.dumps(
        {"key": "k", "execution": "x", "id": "t", "worker": W1, "pid": 7, "phase": "done", "at": 1}
    )
    assert parse_entries([raw, raw.encode()]) == [e("k", "x", W1, "done", 1.0)] * 2
    assert parse_entries([raw])[0].host == "chaos-worker1"


def test_summary_rounds_and_handles_no_values() -> None:
    assert summary([31.04, 40.0, 129.96]) == {
        "n": 3,
        "p50": 40.0,
        "p99": 130.0,
        "max": 130.0,
        "min": 31.0,
    }
    assert summary([1.0, 2.0, 3.0, 4.0])["p50"] == 2.5
    assert summary([]) == {"n": 0, "p50": None, "p99": None, "max": None, "min": None}


def test_p99_is_the_nearest_rank() -> None:
    hundred = [float(i) for i in range(1, 101)]
    assert percentile(hundred, 99) == 99.0
    assert percentile([*hundred, 500.0], 99) == 100.0  # 101 values: rank 100
    assert percentile([5.0, 1.0, 70.0], 99) == 70.0  # fewer than 100 values: the max
    assert percentile([3.0], 50) == 3.0


def test_report_renders_every_experiment_and_an_error() -> None:
    results = {
        "date": "2026-11-25 00:00 UTC",
        "duration_seconds": 1,
        "versions": {"redis_server": "7.0.15"},
        "experiments": [
            {
                "id": 5,
                "title": "Broker memory full",
                "repetitions": 1,
                "counted": "c",
                "criterion": "x",
                "verdict": "pass",
                "result": {
                    "rounds": [{"accepted": 9, "refused": 100, "evicted_keys": 0, "lost": 0}]
                },
            },
            {"id": 6, "title": "Rolling deploy under load", "error": "RuntimeError: boom"},
            {
                "id": 3,
                "title": "Redis SIGKILL",
                "mode": "acl+tls",
                "repetitions": 1,
                "counted": "c",
                "verdict": "FAIL",
                "result": {
                    "rounds": {
                        "aof": [
                            {
                                "queued_before_kill": 10,
                                "queued_after_restart": 14,
                                "revived": 4,
                                "lost": 0,
                                "duplicates": 4,
                            }
                        ]
                    }
                },
            },
        ],
    }
    text = render(results)
    assert (
        "| 5 | Broker memory full | requirepass, plain TCP | 1 | c | accepted 9, refused 100, "
        "evicted_keys 0, lost 0" in text
    )
    assert (
        "| 3 | Redis SIGKILL | ACL users, mutual TLS | 1 | c | aof: kept 14/10, revived 4, "
        "lost 0, duplicates 4 | FAIL" in text
    )
    assert "### 3. Redis SIGKILL (ACL users, mutual TLS)" in text
    assert "error: RuntimeError: boom" in text
    assert "| redis_server | 7.0.15 |" in text
    assert headline(results["experiments"][1]) == "error: RuntimeError: boom"  # type: ignore[index]


def test_a_record_written_twice_is_one_execution() -> None:
    # A write retried after a lost reply repeats the entry; the execution id tells them apart.
    t = tally({"k1"}, [*ENTRIES[:2], ENTRIES[1]])
    assert (t.executed, t.duplicates, t.lost) == (1, 0, 0)


def test_a_flow_names_its_lost_tasks_with_their_task_ids() -> None:
    flow = Flow(Celery("t"), "label", seconds=0.1, interval=1)
    flow.accepted = {"k1": "id-1", "k4": "id-4"}
    assert flow.lost_tasks(list(ENTRIES)) == ["k4 id-4"]


def test_a_failed_mode_switch_reports_the_playbook_error_line() -> None:
    from chaos.__main__ import _reason

    tail = (
        "TASK [x]\n    msg: |-\n        Unable to restart service celery-worker@default.service: "
        "Job failed.\n\nPLAY RECAP ****\nhost : ok=1 failed=1\n"
    )
    assert _reason(tail) == "Unable to restart service celery-worker@default.service: Job failed."
    assert _reason("only this\n") == "only this"
    assert _reason("") == ""


def test_the_safe_deploys_section_shows_every_change_and_its_losses() -> None:
    published = {
        "date": "2026-12-06 07:30 UTC",
        "commit": "abc1234",
        "changes": {
            "release whose import fails": {
                "tasks_sent": 306,
                "tasks_lost": 0,
                "host_down_seconds": 7.0,
                "rollback_seconds": 5.9,
                "deploy_seconds": 61.6,
            },
            "redis setting redis refuses": {"tasks_sent": 120, "tasks_lost": 2},
        },
    }
    text = render_safe_deploys(published)
    assert "run of 2026-12-06 07:30 UTC at commit abc1234" in text
    assert "| release whose import fails | 306 | 0 | 7.0 | 5.9 | 61.6 |" in text
    assert "| redis setting redis refuses | 120 | 2 | - | - | - |" in text


def test_the_failover_section_shows_each_fault_and_its_losses() -> None:
    published = {
        "date": "2026-12-06 23:59 UTC",
        "commit": "def5678",
        "faults": {
            "master host frozen": {
                "tasks_sent": 310,
                "tasks_accepted": 300,
                "sends_refused": 10,
                "tasks_lost": 0,
                "tasks_run_twice": 1,
                "promoted_after_seconds": 6.2,
                "first_task_after_seconds": 9.5,
            },
            "master host cut off": {
                "tasks_sent": 320,
                "tasks_accepted": 320,
                "sends_refused": 0,
                "tasks_lost": 0,
                "tasks_run_twice": 0,
                "promoted_after_seconds": 6.6,
                "first_task_after_seconds": 11.2,
                "isolated_writes_acknowledged_and_lost": 0,
                "isolated_plain_writes_taken_then_lost": 13,
                "isolated_master_refused_writes_after_seconds": 11.8,
            },
            "rolling restart": {
                "tasks_sent": 1167,
                "tasks_accepted": 1167,
                "sends_refused": 0,
                "tasks_lost": 0,
                "tasks_run_twice": 0,
                "first_task_after_seconds": 0.0,
                "deploy_seconds": 118.2,
            },
        },
    }
    text = render_failover(published)
    assert "run of 2026-12-06 23:59 UTC at commit def5678" in text
    assert "| master host frozen | 310 | 300 | 10 | 0 | 1 | 6.2 | 9.5 |" in text
    assert "| master host cut off | 320 | 320 | 0 | 0 | 0 | 6.6 | 11.2 |" in text
    # The cut-off side's own table, for the cut only.
    assert "| master host cut off | 0 | 13 | 11.8 |" in text
    assert "| master host frozen | 0 |" not in text
    assert "| rolling restart | 1167 | 1167 | 0 | 0 | 0 | - | 0.0 |" in text


def test_the_repeated_faults_show_their_sums_and_p50_max() -> None:
    times = {"n": 5, "p50": 7.1, "p99": 9.9, "max": 9.9, "min": 6.0}
    published = {
        "date": "2026-12-07 08:00 UTC",
        "commit": "abc9999",
        "experiments": {
            "master SIGKILLed and kept down, durable publish": {
                "rounds": 5,
                "tasks_sent": 1800,
                "tasks_accepted": 1795,
                "sends_refused": 5,
                "tasks_lost": 0,
                "tasks_run_twice": 0,
                "promoted_after_seconds": times,
                "first_task_after_seconds": {"n": 5, "p50": 8.0, "max": 12.5},
                "workers_restarted": 0,
            },
            "master host cut off": {
                "rounds": 2,
                "tasks_sent": 700,
                "tasks_accepted": 700,
                "sends_refused": 0,
                "tasks_lost": 0,
                "tasks_run_twice": 0,
                "promoted_after_seconds": {"n": 2, "p50": 5.0, "max": 6.0},
                "first_task_after_seconds": {"n": 2, "p50": 6.0, "max": 7.0},
                "workers_restarted": 0,
                "isolated_writes_acknowledged_and_lost": 0,
                "isolated_plain_writes_taken_then_lost": 27,
                "isolated_master_refused_writes_after_seconds": {"n": 2, "p50": 11.5, "max": 12.0},
            },
            "rolling restart": {
                "rounds": 2,
                "tasks_sent": 900,
                "tasks_accepted": 900,
                "sends_refused": 0,
                "tasks_lost": 0,
                "tasks_run_twice": 0,
                "promoted_after_seconds": {"n": 0, "p50": None, "max": None},
                "first_task_after_seconds": {"n": 2, "p50": 0.0, "max": 0.0},
                "workers_restarted": 0,
            },
        },
    }
    text = render_ha_experiments(published)
    assert "run of 2026-12-07 08:00 UTC at commit\nabc9999" in text
    assert (
        "| master SIGKILLed and kept down, durable publish | 5 | 1800 | 1795 | 5 | 0 | 0"
        " | 7.1 / 9.9 | 8.0 / 12.5 | 0 |" in text
    )
    assert "| rolling restart | 2 | 900 | 900 | 0 | 0 | 0 | - | 0.0 / 0.0 | 0 |" in text
    assert "acknowledged, then lost: 0; plain writes taken, then lost: 27;" in text
    assert "writes after (s, p50 / max): 11.5 / 12.0." in text
    assert text.count("on the cut-off side") == 1
