"""The rollback plugins (roles/*/filter_plugins/*_rollback.py): what a failed host gets back,
and a message that names what changed by the variable that feeds it, without secrets."""

from __future__ import annotations

import base64
import sys
from typing import Any

from conftest import REPO

sys.path.insert(0, str(REPO / "roles/celery_worker/filter_plugins"))
sys.path.insert(0, str(REPO / "roles/redis/filter_plugins"))
import celery_worker_rollback as worker  # the roles' plugins, not installed modules
import redis_rollback as redis

DROPIN = "/etc/systemd/system/celery-worker@default.service.d/node.conf"
DROPIN2 = "/etc/systemd/system/celery-worker@io.service.d/node.conf"
# The drop-in's name in earlier bundle releases.
OLD_DROPIN = "/etc/systemd/system/celery-worker@default.service.d/instance.conf"
UNIT = "/etc/systemd/system/celery-worker@.service"
CONFIG = "/etc/textstats/config.toml"


def dropin(memory: str = "infinity", queues: str = "celery,text") -> str:
    return (
        "# Ansible managed\n[Service]\n"
        f'Environment="WORKER_ARGS=--pool custom --concurrency 1 --queues {queues}'
        ' --prefetch-multiplier 1 --soft-time-limit 300 --time-limit 330"\n'
        'Environment="CELERY_CUSTOM_WORKER_POOL=rcbundle.solo:TaskPool"\n'
        f"TimeoutStopSec=370\nMemoryMax={memory}\n"
    )


def config(password: str = "s3cret-s3cret-s3cret", port: int = 6379) -> str:
    return (
        f'[redis]\nhost = "redis1"\nport = {port}\npassword = "{password}"\n'
        '[celery]\ntask_time_limit = 330\n[celery.task_routes]\n"textstats.tasks.slug" = "text"\n'
    )


def files(**contents: str) -> dict[str, dict[str, str]]:
    return {
        path: {"content": text, "mode": "0640", "owner": "root", "group": "textstats"}
        for path, text in contents.items()
    }


def test_snapshot_reads_a_find_and_a_slurp() -> None:
    found = {
        "files": [
            {"path": CONFIG, "mode": "0640", "pw_name": "root", "gr_name": "textstats"},
            {"path": "/etc/systemd/system/multi-user.target.wants/node.conf"},
        ]
    }
    assert worker.celery_worker_managed(found) == [CONFIG]
    drop_ins = {"files": [{"path": DROPIN}, {"path": OLD_DROPIN}, {"path": DROPIN + ".bak"}]}
    assert worker.celery_worker_managed(drop_ins) == [OLD_DROPIN, DROPIN]
    slurped = {
        "results": [
            {"item": CONFIG, "content": base64.b64encode(b"x = 1\n").decode()},
            {"item": UNIT, "skipped": True},
        ]
    }
    assert worker.celery_worker_snapshot(found, slurped) == {
        CONFIG: {"content": "x = 1\n", "mode": "0640", "owner": "root", "group": "textstats"}
    }


def test_restore_writes_back_what_changed_and_removes_what_the_run_added() -> None:
    before = files(**{DROPIN: dropin(), CONFIG: config(), UNIT: "unit\n"})
    after = files(**{DROPIN: dropin("8M"), CONFIG: config(), UNIT: "unit\n", DROPIN2: dropin()})
    plan = worker.celery_worker_restore(before, after)
    assert [entry["path"] for entry in plan["write"]] == [DROPIN]
    assert plan["write"][0]["content"] == dropin()
    assert plan["remove"] == ["/etc/systemd/system/celery-worker@io.service.d"]
    assert plan["stop"] == ["celery-worker@io.service"]
    assert plan["restart"] == ["celery-worker@default.service"]


def test_restore_after_the_drop_in_was_renamed_puts_the_old_name_back() -> None:
    # This release's first run on a host of an earlier one: instance.conf became node.conf.
    before = files(**{OLD_DROPIN: dropin(), CONFIG: config()})
    after = files(**{DROPIN: dropin(), CONFIG: config()})
    plan = worker.celery_worker_restore(before, after)
    assert [entry["path"] for entry in plan["write"]] == [OLD_DROPIN]
    assert plan["remove"] == [DROPIN]  # the file: the node and its directory stay
    assert plan["stop"] == []
    assert plan["restart"] == plan["earlier"] == ["celery-worker@default.service"]


def test_restore_restarts_only_the_nodes_that_are_down_when_nothing_goes_back() -> None:
    before = files(**{DROPIN: dropin(), DROPIN2: dropin()})
    states = [_state("default", "failed"), _state("io", "active", "running")]
    plan = worker.celery_worker_restore(before, before, states, release_changed=False)
    assert plan["restart"] == ["celery-worker@default.service"]
    assert plan["write"] == []
    assert worker.celery_worker_restore(before, before, states)["restart"] == [
        "celery-worker@default.service",
        "celery-worker@io.service",
    ]


def test_changes_name_the_variable_and_hide_the_password() -> None:
    before = files(**{DROPIN: dropin(), CONFIG: config()})
    after = files(**{DROPIN: dropin("8M", "celery"), CONFIG: config("an-0ther-passw0rd", 6390)})
    changes = worker.celery_worker_changes(before, after, "aaa", "bbb")
    assert changes[0].startswith("release: aaa -> bbb (the app built from app_release_source_dir")
    text = "\n".join(changes)
    assert (
        f"{DROPIN}: MemoryMax: infinity -> 8M (celery_worker_memory_max, or memory_max in the"
        " node's entry of celery_worker_instances)" in text
    )
    assert "--queues: celery,text -> celery (celery_worker_queues" in text
    assert "redis.port: 6379 -> 6390 (celery_worker_redis_port)" in text
    assert "redis.password changed (celery_worker_redis_password)" in text
    assert "an-0ther-passw0rd" not in text
    assert "s3cret" not in text


def test_a_renamed_drop_in_is_reported_as_one_change() -> None:
    before = files(**{OLD_DROPIN: dropin(), CONFIG: config()})
    same = files(**{DROPIN: dropin(), CONFIG: config()})
    assert worker.celery_worker_changes(before, same, "aaa", "aaa") == [
        f"{OLD_DROPIN}: renamed node.conf (a bundle upgrade)"
    ]
    bigger = files(**{DROPIN: dropin("8M"), CONFIG: config()})
    assert worker.celery_worker_changes(before, bigger, "aaa", "aaa") == [
        f"{OLD_DROPIN}: renamed node.conf (a bundle upgrade)",
        f"{DROPIN}: MemoryMax: infinity -> 8M (celery_worker_memory_max, or memory_max in the"
        " node's entry of celery_worker_instances)",
    ]


def test_an_unchanged_host_reports_no_change() -> None:
    before = files(**{DROPIN: dropin(), CONFIG: config()})
    assert worker.celery_worker_changes(before, before, "aaa", "aaa") == []
    assert worker.celery_worker_restore(before, before)["write"] == []


BEAT = "/etc/systemd/system/celery-beat.service"
KEY = "/etc/textstats/tls/client.key"
CERT = "/etc/textstats/tls/client.crt"


def test_the_beat_unit_and_the_client_certificate_are_managed_files() -> None:
    paths = [BEAT, KEY, CERT, "/etc/textstats/tls/ca.crt", "/etc/textstats/tls/other.pem"]
    found = {"files": [{"path": path} for path in paths]}
    assert worker.celery_worker_managed(found) == sorted(paths[:4])


def test_restore_restarts_beat_with_the_nodes_and_stops_a_beat_this_run_added() -> None:
    beat = "ExecStart=/opt/textstats/current/venv/bin/celery --app a:b beat --loglevel INFO\n"
    before = files(**{DROPIN: dropin(), BEAT: beat, KEY: "old key\n"})
    after = files(**{DROPIN: dropin(), BEAT: beat.replace("INFO", "DEBUG"), KEY: "new key\n"})
    plan = worker.celery_worker_restore(before, after, release_changed=False)
    assert sorted(entry["path"] for entry in plan["write"]) == [BEAT, KEY]
    assert plan["restart"] == ["celery-beat.service", "celery-worker@default.service"]
    assert plan["earlier"] == plan["restart"]
    # A run that turned beat on, on a host that had none: beat stops and its unit goes.
    plan = worker.celery_worker_restore(files(**{DROPIN: dropin()}), after)
    assert plan["stop"] == ["celery-beat.service"]
    assert BEAT in plan["remove"]


def test_changes_name_beat_and_certificate_variables_and_never_quote_a_key() -> None:
    beat = "ExecStart=/opt/textstats/current/venv/bin/celery --app a:b beat --loglevel INFO\n"
    before = files(**{BEAT: beat, KEY: "-----BEGIN PRIVATE KEY-----\nold\n"})
    after = files(
        **{BEAT: beat.replace("INFO", "DEBUG"), KEY: "-----BEGIN PRIVATE KEY-----\nnew\n"}
    )
    text = "\n".join(worker.celery_worker_changes(before, after, "aaa", "aaa"))
    assert "ExecStart --loglevel: INFO -> DEBUG (celery_worker_beat_loglevel)" in text
    assert f"{KEY}: changed (the bundle's certificates step" in text
    assert "PRIVATE KEY" not in text
    added = worker.celery_worker_changes({}, files(**{BEAT: beat, CERT: "c"}), "aaa", "aaa")
    assert f"{BEAT}: added (celery_worker_beat)" in added
    assert f"{CERT}: added (celery_worker_redis_tls)" in added


def _state(name: str, *state: str) -> dict[str, Any]:
    return {"item": {"name": name}, "stdout_lines": list(state)}


def test_the_message_quotes_the_unit_and_says_where_the_host_is() -> None:
    message = worker.celery_worker_rollback_message(
        {
            "host": "w1",
            "changes": ["release: aaa -> bbb (the app ...)"],
            "states": [
                _state("default", "activating", "auto-restart"),
                _state("io", "active", "running"),
            ],
            "logs": [{"item": _state("default", "activating"), "stdout_lines": ["ImportError: x"]}],
            "failed_task": "Restart Celery workers",
            "failed_msg": "One or more items failed",
            "release": "aaa",
            "checks": [
                {"item": "celery-worker@default.service", "stdout_lines": ["active", "running"]}
            ],
        }
    )
    assert (
        "celery-worker@default.service is activating/auto-restart; its log, up to its first"
        " failure:" in message
    )
    assert "    ImportError: x" in message
    assert "celery-worker@io" not in message
    assert "  - release: aaa -> bbb" in message
    assert "Rolled back: the host runs release aaa" in message
    assert "run deploy.yml again" in message


def test_the_message_says_when_the_rollback_did_not_bring_the_host_back() -> None:
    message = worker.celery_worker_rollback_message(
        {
            "host": "w1",
            "changes": [],
            "states": [],
            "logs": [],
            "failed_task": "Install the release's requirements",
            "failed_msg": "pip failed",
            "release": "aaa",
            "checks": [{"item": "celery-worker@default.service", "stdout_lines": ["failed"]}],
        }
    )
    assert "The step that failed: Install the release's requirements: pip failed" in message
    assert "still do not serve: celery-worker@default.service" in message


def test_a_first_deploy_has_nothing_to_roll_back_to() -> None:
    message = worker.celery_worker_rollback_message(
        {
            "host": "w1",
            "changes": [],
            "states": [],
            "logs": [],
            "failed_task": "t",
            "failed_msg": "m",
            "release": "",
            "checks": [{"skipped": True, "item": "celery-worker@default.service"}],
        }
    )
    assert "Nothing to roll back to" in message


REDIS_CONF = "/etc/redis/redis.conf"
REDIS_LIVE = "/etc/redis/redis-live.conf"
RESULTS_CONF = "/etc/redis/redis-results.conf"


def redis_conf(bind: str = "127.0.0.1 10.0.0.5", port: str = "port 6379") -> str:
    return f'# managed\nbind {bind}\n{port}\nrequirepass "s3cret-s3cret-s3cret"\nmaxclients 10000\n'


def _redis_state(unit: str, *state: str) -> dict[str, Any]:
    return {"item": {"unit": unit}, "stdout_lines": list(state)}


def test_redis_restore_restarts_what_is_down_or_changed_and_probes_its_old_address() -> None:
    before = files(**{REDIS_CONF: redis_conf(), REDIS_LIVE: "loglevel notice\n"})
    before[RESULTS_CONF] = {**before[REDIS_CONF], "content": redis_conf(port="port 6380")}
    after = {
        **before,
        REDIS_CONF: {**before[REDIS_CONF], "content": redis_conf("127.0.0.1 192.0.2.1")},
    }
    states = [
        _redis_state("redis-server", "activating", "auto-restart"),
        _redis_state("redis-server@results", "active", "running"),
    ]
    plan = redis.redis_restore(before, after, states)
    assert [entry["path"] for entry in plan["write"]] == [REDIS_CONF]
    assert plan["restart"] == ["redis-server"]  # the results server keeps serving
    assert plan["probe"] == [
        {"unit": "redis-server", "address": "127.0.0.1", "port": "6379", "tls": False}
    ]


def test_redis_certificate_files_go_back_and_restart_every_server_never_quoted() -> None:
    key = "/etc/redis/tls/redis.key"
    found = {"files": [{"path": key}, {"path": "/etc/redis/tls/other.pem"}]}
    assert redis.redis_managed(found) == [key]
    before = files(**{REDIS_CONF: redis_conf(), key: "-----BEGIN PRIVATE KEY-----\nold\n"})
    before[RESULTS_CONF] = {**before[REDIS_CONF], "content": redis_conf(port="port 6380")}
    after = {**before, key: {**before[key], "content": "-----BEGIN PRIVATE KEY-----\nnew\n"}}
    serving = [
        _redis_state("redis-server", "active", "running"),
        _redis_state("redis-server@results", "active", "running"),
    ]
    plan = redis.redis_restore(before, after, serving)
    assert [entry["path"] for entry in plan["write"]] == [key]
    assert plan["restart"] == ["redis-server", "redis-server@results"]
    changes = redis.redis_changes(before, after)
    assert changes == [
        f"{key}: changed (the bundle's certificates step, or redis_tls_ca_cert_file,"
        " redis_tls_cert_file, redis_tls_key_file)"
    ]


def test_a_group_server_that_did_not_restart_gets_its_files_back_without_a_restart() -> None:
    """In a replicated group the servers restart in turn: one that never restarted in this run
    still runs what it loaded, so its files go back and it keeps serving; the one that
    restarted (or is down) restarts on them. Live settings went to every server at once."""
    key = "/etc/redis/tls/redis.key"
    before = files(**{REDIS_CONF: redis_conf(), REDIS_LIVE: "loglevel notice\n", key: "old\n"})
    after = {
        **before,
        REDIS_CONF: {**before[REDIS_CONF], "content": redis_conf("127.0.0.1 192.0.2.1")},
        key: {**before[key], "content": "new\n"},
    }
    serving = [_redis_state("redis-server", "active", "running")]
    kept = redis.redis_restore(before, after, serving, loaded=False)
    assert [entry["path"] for entry in kept["write"]] == [REDIS_CONF, key]
    assert kept["restart"] == []
    assert redis.redis_restore(before, after, serving, loaded=True)["restart"] == ["redis-server"]
    down = [_redis_state("redis-server", "activating", "auto-restart")]
    assert redis.redis_restore(before, after, down, loaded=False)["restart"] == ["redis-server"]
    live = {**before, REDIS_LIVE: {**before[REDIS_LIVE], "content": "loglevel debug\n"}}
    assert redis.redis_restore(before, live, serving, loaded=False)["restart"] == ["redis-server"]


def test_redis_probe_follows_the_tls_port() -> None:
    before = files(**{REDIS_CONF: redis_conf(port="port 0\ntls-port 6379")})
    plan = redis.redis_restore(before, {}, [_redis_state("redis-server", "failed")])
    assert plan["probe"][0]["port"] == "6379"
    assert plan["probe"][0]["tls"] is True


def test_redis_changes_name_the_variable_and_hide_secrets() -> None:
    before = files(
        **{
            REDIS_CONF: redis_conf(),
            "/etc/redis/users.acl": "user celery on #abc ~* +@all\n",
        }
    )
    before[RESULTS_CONF] = {**before[REDIS_CONF], "content": redis_conf(port="port 6380")}
    after = {
        REDIS_CONF: {
            **before[REDIS_CONF],
            "content": redis_conf("127.0.0.1 192.0.2.1").replace(
                "s3cret-s3cret-s3cret", "n3w-passw0rd-n3w"
            ),
        },
        RESULTS_CONF: {**before[RESULTS_CONF], "content": redis_conf(port="port 6390")},
        "/etc/redis/users.acl": {
            **before["/etc/redis/users.acl"],
            "content": "user celery on #def\n",
        },
    }
    text = "\n".join(redis.redis_changes(before, after))
    assert f"{REDIS_CONF}: bind 127.0.0.1 10.0.0.5 -> 127.0.0.1 192.0.2.1 (redis_bind)" in text
    assert f"{REDIS_CONF}: requirepass changed (redis_password)" in text
    assert f"{RESULTS_CONF}: port 6380 -> 6390 (redis_results_port)" in text
    assert "users.acl: user celery changed (redis_password, redis_acl_*" in text
    assert "n3w-passw0rd" not in text
    assert "s3cret" not in text
    assert "#def" not in text


def test_a_changed_replication_password_is_named_never_shown() -> None:
    def conf(secret: str) -> str:
        return redis_conf() + f'masteruser replication\nmasterauth "{secret}"\n'

    before = files(**{REDIS_CONF: conf("old-replication-secret")})
    after = files(**{REDIS_CONF: conf("new-replication-secret")})
    text = "\n".join(redis.redis_changes(before, after))
    assert f"{REDIS_CONF}: masterauth changed (redis_acl_replication_password)" in text
    assert "replication-secret" not in text


def test_redis_message_quotes_redis_and_the_probe() -> None:
    report = {
        "host": "r1",
        "changes": ["/etc/redis/redis.conf: bind a -> b (redis_bind)"],
        "logs": [
            {
                "item": _redis_state("redis-server", "activating", "auto-restart"),
                "stdout_lines": ["# Could not create server TCP listening socket 192.0.2.1:6379"],
            }
        ],
        "failed_task": "Restart changed Redis servers",
        "failed_msg": "x",
        "checks": [{"item": {"unit": "redis-server"}, "stdout": "PONG"}],
    }
    message = redis.redis_rollback_message(report)
    assert "redis-server is activating/auto-restart; its log, up to its first failure:" in message
    assert "Could not create server TCP listening socket 192.0.2.1:6379" in message
    assert "(redis_bind)" in message
    assert "Rolled back: the earlier configuration is back and answers (redis-server)" in message
    report["checks"] = [{"item": {"unit": "redis-server"}, "stdout": ""}]
    assert "these do not answer: redis-server" in redis.redis_rollback_message(report)


def test_the_log_is_quoted_up_to_the_first_failure() -> None:
    log = [f"line {i}" for i in range(30)]
    log[20:22] = ["x.service: Main process exited, code=exited", "x.service: Failed with result"]
    log[27] = "x.service: Failed with result 'exit-code'."
    assert worker.first_failure(log) == log[7:22]
    assert redis.first_failure(log, 3) == log[19:22]
    assert worker.first_failure(["a", "b"]) == ["a", "b"]
    assert worker.first_failure([]) == ["(nothing logged)"]


def test_the_unit_change_names_the_flag_and_its_variable() -> None:
    unit = (
        "[Service]\nExecStart=/opt/a/current/venv/bin/celery --app {} worker \\\n"
        "    --hostname %i@%H --loglevel INFO $WORKER_ARGS\nKillMode=mixed\n"
    )
    before = files(**{UNIT: unit.format("textstats.worker:celery_app")})
    after = files(**{UNIT: unit.format("textstats.worker:no_such_app")})
    assert worker.celery_worker_changes(before, after, "a", "a") == [
        f"{UNIT}: ExecStart --app: textstats.worker:celery_app -> textstats.worker:no_such_app"
        " (celery_worker_app_module)"
    ]
