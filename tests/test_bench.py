"""`make bench` cannot rot: its statistics, its report, and a short run of its load client.

No timing is asserted: the client runs against a Redis and a worker started
here on loopback, and must only complete and report what it measured.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from bench import client as bench_client
from bench import harness, report
from bench.stats import Target, percentile, summarize

PYTHON = sys.executable
PASSWORD = "bench-test-only-throwaway"


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert percentile(list(map(float, range(101))), 99) == 99.0
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile([1.0], 101)


def test_summary_reports_median_and_spread() -> None:
    s = summarize([10.0, 30.0, 20.0])
    assert (s.median, s.low, s.high, s.runs) == (20.0, 10.0, 30.0, 3)
    assert s.spread == 1.0


@pytest.mark.parametrize(
    ("value", "bound", "at_least", "met", "shortfall"),
    [(2.2, 2.0, True, True, 0.0), (1.5, 2.0, True, False, 0.25), (3.3, 3.0, False, False, 0.1)],
)
def test_target_says_met_or_by_how_much(
    value: float, bound: float, at_least: bool, met: bool, shortfall: float
) -> None:
    target = Target("t", value, bound, at_least)
    assert target.met is met
    assert target.shortfall == pytest.approx(shortfall)
    assert ("NOT met" in target.describe()) is not met


def _drain(rate: float, cpu_busy: float = 0.9) -> dict[str, Any]:
    return {
        "tasks_per_s": rate,
        "rss_idle_kib": {"1": 1024},
        "rss_load_kib": {"1": 2048},
        "cpu_busy": cpu_busy,
    }


def _latency(ms: float) -> dict[str, Any]:
    return {"samples_ms": [ms, ms * 2]}


def fake_run(plain: tuple[float, float, float] | None = None) -> dict[str, Any]:
    """Two repetitions where the bundle is exactly twice Stock, and so on.

    plain: a plain producer's idle latency, trivial and trivial-with-results rates as factors
    of Stock's (None: a run from before the plain producer was measured).
    """
    runs: list[dict[str, Any]] = []
    for rep, noise in enumerate((1.0, 1.5)):
        if plain:
            latency, rate, results_rate = plain
            runs.append(
                {
                    "rep": rep,
                    "config": "plain-producer",
                    "workers": "bundle",
                    "nodes": 2,
                    "trivial": _drain(1000 * rate * noise) | {"transport": "kombu:Transport"},
                    "trivial_results": _drain(500 * results_rate * noise),
                    "latency_idle": _latency(1.0 * latency),
                }
            )
        for config, factor in (
            ("stock", 1.0),
            ("bundle", 2.0),
            ("unhardened", 2.1),
            ("prefork-nodes", 1.6),
            ("one-node", 1.2),
        ):
            runs.append(
                {
                    "rep": rep,
                    "config": config,
                    "nodes": 1,
                    "burn": _drain(100 * factor * noise),
                    "trivial": _drain(1000 * factor * noise, cpu_busy=0.5 + 0.2 * noise),
                    "trivial_results": _drain(500 * factor * noise),
                    "latency_idle": _latency(1.0 * factor),
                    "latency_load": _latency(3.0),
                }
            )
        for config in ("stock-1", "bundle-1"):
            runs.append({"rep": rep, "config": config, "nodes": 1, "burn": _drain(50 * noise)})
        for results, rate in ((False, 5000.0), (True, 4000.0)):
            runs.append(
                {
                    "rep": rep,
                    "config": "raw",
                    "results": results,
                    "raw": {"tasks_per_s": rate * noise},
                }
            )
        runs.append({"rep": rep, "config": "redis-benchmark", "rates": {"PING_INLINE": 50000.0}})
    return {
        "runs": runs,
        "queued_memory": {"bundle": {"queued": 500, "used_memory_delta": 500_000}},
        "consumer_processes": 2,
        "date": "2026-11-24T00:00:00+00:00",
        "duration_s": 1.0,
        "load_average": {"before": [1.0, 1.0, 1.0], "after": [2.0, 2.0, 2.0]},
        "sizes": {"reps": 2, "trivial": 1, "burn": 1, "latency": 1, "raw": 1, "load_rate": 1.0},
        "machine": {
            "cpu": "test",
            "vcpus": 2,
            "memory_gib": 1,
            "versions": {"celery": "x"},
            "bundle_nodes": {"default": ["--pool", "prefork"]},
        },
    }


def test_report_pairs_ratios_within_each_repetition() -> None:
    data = fake_run()
    summary = report.summarize_run(data)
    ratios = summary["ratios"]
    # The machine got 1.5x faster in repetition 2; ratios within a repetition do not move.
    assert ratios["bundle_vs_stock_trivial"] == pytest.approx(
        {"median": 2.0, "min": 2.0, "max": 2.0, "runs": 2, "spread": 0.0}
    )
    assert ratios["bundle_cpu_scaling"]["median"] == pytest.approx(4.0)
    assert ratios["bundle_vs_prefork_nodes_trivial"]["median"] == pytest.approx(1.25)
    assert summary["used_memory_per_10k_queued"] == {"bundle": 10_000_000}
    # The bundle's trivial drains kept 70% and 80% of the machine busy: median 75%.
    assert summary["cpu_busy"]["bundle"]["trivial"] == pytest.approx(0.75)
    assert summary["cpu_busy"]["stock-1"] == {"burn": pytest.approx(0.9)}
    verdicts = {t["name"]: t["met"] for t in summary["targets"]}
    assert verdicts["Bundle defaults / Stock, trivial tasks with results"] is True
    assert verdicts["Latency at idle, p99 vs Stock's p99"] is False  # 3.98 ms vs 1.99 ms
    data["summary"] = summary
    text = report.markdown(data)
    assert "| Latency at idle, p99 vs Stock's p99 |" in text
    assert "**not met**" in text
    assert "| bundle | 75% | 90% | 90% |" in text
    assert "load average 1.00 before the run" in text
    assert "2.00 after it" in text
    # What bounds the figures is worded from the run: 2x stock at the bundle's CPU per task.
    assert "would need 75% and 90% of the machine" in text
    assert "was 5% (5% to 5%) without results" in text
    assert "does not win that back here: solo ran 1.25x" in text
    # No plain-producer runs (older results): no such section, and nothing else changes.
    assert "plain_producer" not in summary
    assert "## Plain producer" not in text


@pytest.mark.parametrize(
    ("plain", "verdicts"),
    [
        # Today's plain producer: its task waits for the workers' 1 s poll.
        ((600.0, 0.9, 1.0), {"p50": False, "p99": False, "without": False, "with": True}),
        ((1.2, 1.0, 1.1), {"p50": True, "p99": True, "without": True, "with": True}),
        ((1.3, 1.5, 0.5), {"p50": False, "p99": False, "without": True, "with": False}),
    ],
)
def test_plain_producer_is_measured_against_stock(
    plain: tuple[float, float, float], verdicts: dict[str, bool]
) -> None:
    data = fake_run(plain)
    summary = report.summarize_run(data)
    p = summary["plain_producer"]
    latency, rate, results_rate = plain
    assert p["latency_idle_ms"]["stock"]["p50"] == pytest.approx(1.5)  # samples 1, 2, 1, 2
    assert p["latency_idle_ms"]["bundle"]["max"] == pytest.approx(4.0)
    assert p["latency_idle_ms"]["plain"]["max"] == pytest.approx(2.0 * latency)
    assert p["ratios"]["latency_p50"]["median"] == pytest.approx(latency)
    assert p["ratios"]["latency_p99"]["median"] == pytest.approx(latency)
    # Paired within each repetition: the machine's 1.5x in repetition 2 does not move them.
    assert p["ratios"]["trivial"] == pytest.approx(
        {"median": rate, "min": rate, "max": rate, "runs": 2, "spread": 0.0}
    )
    assert p["ratios"]["trivial_results"]["median"] == pytest.approx(results_rate)
    assert p["throughput"]["plain"]["trivial"]["max"] == pytest.approx(1500 * rate)
    assert p["transports"] == {"plain": ["kombu:Transport"]}
    met = {t["name"]: t["met"] for t in p["targets"]}
    assert met == {
        "Plain producer / Stock, idle latency p50": verdicts["p50"],
        "Plain producer / Stock, idle latency p99": verdicts["p99"],
        "Plain producer / Stock, trivial tasks without results": verdicts["without"],
        "Plain producer / Stock, trivial tasks with results": verdicts["with"],
    }
    # The plain producer leaves issue 6's targets as they were.
    assert summary["targets"] == report.summarize_run(fake_run())["targets"]
    assert all(t["name"] in report.targets_text(summary) for t in p["targets"])
    data["summary"] = summary
    text = report.markdown(data)
    section = text.split("## Plain producer\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows[2].startswith("| stock (stock producer, stock workers) | 1.50 | 2.00 | 2.0 | ")
    assert rows[3].startswith("| bundle producer (rcbundle.transport), bundle workers | 3.00 |")
    plain_row = rows[4].split(" | ")
    assert plain_row[0] == "| **plain producer** (kombu's Redis transport), bundle workers"
    assert plain_row[1] == f"{1.5 * latency:.2f}"
    assert plain_row[3] == f"{2.0 * latency:.1f}"
    assert plain_row[4] == f"{1250 * rate:,.0f} ({1000 * rate:,.0f}-{1500 * rate:,.0f})"
    assert f"idle latency p50 {latency:.2f}x, p99 {latency:.2f}x, max {latency:.2f}x" in section
    assert f"throughput {rate:.2f}x ({rate:.2f}-{rate:.2f}) without results" in section
    assert "Targets: idle latency p50 and p99 at most 1.2x stock's" in section
    for t in p["targets"]:
        verdict = "met" if t["met"] else "**not met**"
        assert f"| {t['name']} | {t['value']:.3g}x | " in section
        assert any(
            line.startswith(f"| {t['name']} |") and f"| {verdict}" in line
            for line in section.splitlines()
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def stock_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server and a stock Celery worker (bench/stock_app.py) on loopback."""
    port = _free_port()
    tmp = tmp_path_factory.mktemp("bench")
    redis_proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO / "bench"), "BENCH_STOCK_URL": url}
    worker = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "stock_app",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
        ],
        env=env,
        cwd=tmp,
    )
    try:
        client(url, "ready", "--expect", "1", "--timeout", "30")
        yield url
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        redis_proc.terminate()
        redis_proc.wait(timeout=30)


def client(url: str, *argv: str) -> dict[str, Any]:
    out = subprocess.run(
        [PYTHON, str(REPO / "bench/client.py"), "--stock-url", url, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_client_drains_a_queue_with_results(stock_worker: str) -> None:
    result = client(stock_worker, "drain", "--n", "50", "--results", "--pids", str(os.getpid()))
    assert result["n"] == 50
    assert result["results_stored"] == 50
    assert result["tasks_per_s"] > 0
    assert result["rss_idle_kib"][str(os.getpid())] > 0
    assert 0 < result["cpu_busy"] <= 1  # the worker and this client were busy, at least


def test_busy_share_counts_busy_ticks_of_all_ticks() -> None:
    assert bench_client.busy_share((100, 1000), (250, 1200)) == pytest.approx(0.75)
    assert bench_client.busy_share((5, 5), (5, 5)) == 0.0
    busy, total = bench_client.cpu_ticks()
    assert 0 < busy < total


def test_client_measures_latency_under_load(stock_worker: str) -> None:
    started = time.monotonic()
    result = client(stock_worker, "latency", "--n", "5", "--load-rate", "20")
    assert len(result["samples_ms"]) == 5
    assert all(ms > 0 for ms in result["samples_ms"])
    assert time.monotonic() - started < 60


def test_plain_producer_sends_on_kombus_transport(stock_worker: str, tmp_path: Path) -> None:
    """--plain: the bundle's settings (here a loopback Redis, no TLS) without rcbundle's
    transport; the stock worker on the same Redis runs its tasks."""
    port = stock_worker.rsplit(":", 1)[1]
    config = tmp_path / "config.toml"
    config.write_text(f'[redis]\nhost = "127.0.0.1"\nport = {port}\npassword = "{PASSWORD}"\n')
    out = subprocess.run(
        [PYTHON, str(REPO / "bench/client.py"), "--config", str(config), "--plain",
         "latency", "--n", "3"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["transport"] == "kombu.transport.redis:Transport"
    assert len(result["samples_ms"]) == 3
    assert result["max_ms"] == max(result["samples_ms"])


def test_plain_is_the_bundle_sides_producer() -> None:
    with pytest.raises(SystemExit) as exc:
        bench_client.main(["--stock-url", "redis://unused", "--plain", "latency"])
    assert exc.value.code == 2


def test_raw_queue_consumes_every_message(stock_worker: str) -> None:
    result = client(
        stock_worker,
        "raw",
        "--raw-url",
        stock_worker,
        "--n",
        "300",
        "--processes",
        "2",
        "--results",
    )
    assert result["n"] == 300
    assert result["tasks_per_s"] > 0


def test_unhardened_config_points_the_app_at_another_redis() -> None:
    bundle = (
        '[redis]\nhost = "r1"\nport = 6379\nusername = "celery"\npassword = "x"\n\n'
        '[redis.tls]\nenabled = true\nca_file = "/ca"\ncert_file = "/c"\nkey_file = "/k"\n\n'
        '[celery]\ntask_time_limit = 330\n[celery.task_routes]\n"a.b" = "q"\n'
    )
    text = harness.unhardened_config(bundle, "r1", 6380, 'p"w')
    assert tomllib.loads(text) == {
        "redis": {"host": "r1", "port": 6380, "password": 'p"w'},
        "celery": {"task_time_limit": 330, "task_routes": {"a.b": "q"}},
    }


def test_with_pool_swaps_a_nodes_pool_and_concurrency() -> None:
    args = ["--pool", "custom", "--concurrency", "1", "--queues", "celery"]
    assert harness.with_pool(args, "prefork", 2) == [
        "--pool", "prefork", "--concurrency", "2", "--queues", "celery",
    ]  # fmt: skip
    assert args[1] == "custom"  # the node's own list is left alone


def test_the_ha_section_compares_each_configuration_with_the_single_host() -> None:
    def rep(tasks: float, publish: float, ms: float) -> dict[str, Any]:
        return {"tasks_per_s": tasks, "publish_per_s": publish, "samples_ms": [ms] * 10}

    configs = {
        "single host": [rep(400, 1000, 5.0), rep(420, 1100, 5.0)],
        "group, durable publish": [rep(380, 500, 6.0), rep(400, 550, 6.0)],
        "group, no durable publish": [rep(410, 1050, 5.5), rep(410, 1050, 5.5)],
    }
    run = {"reps": 2, "tasks": 2000, "configs": configs}
    summary = report.ha_summary(configs)
    assert summary["single host"]["throughput_x"] == 1.0
    assert summary["group, durable publish"]["publish_x"] == 525 / 1050
    assert summary["group, durable publish"]["p50_x"] == 6.0 / 5.0
    text = report.ha_markdown({"date": "2026-12-07 09:00 UTC", "commit": "abc1234", "run": run})
    assert "run of 2026-12-07 09:00 UTC at commit abc1234" in text
    assert "| single host | 410 | 1.00 | 1050 | 1.00 | 5.0 | 5.0 | 5.0 | 1.00 |" in text
    assert "| group, durable publish | 390 | 0.95 | 525 | 0.50 | 6.0 | 6.0 | 6.0 | 1.20 |" in text
