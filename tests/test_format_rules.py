"""The validate play's format rules (playbooks/filter_plugins/bundle_formats.py), without a lab:
every rule accepts what its consumer takes and refuses, with its message, what breaks it."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "playbooks/filter_plugins"))
# Filter plugin files, not installed modules.
import bundle_formats
import bundle_validate

# Every rule: values it accepts, values it refuses.
CASES: dict[str, tuple[list[Any], list[Any]]] = {
    "celery_worker_app_name": (["taskapp", "my-app_2"], ["My App", "2app", "app/x", "a" * 33]),
    "celery_worker_app_module": (
        ["taskapp.app:app", "proj", "proj.celery"],
        ["proj.celery app", "proj:", "proj/celery.py", ":app"],
    ),
    "celery_worker_redis_host": (
        ["redis1", "redis1.example.internal", "10.0.0.5", "::1"],
        ["redis1:6379", "redis 1", "-redis", "redis_1.example"],
    ),
    "celery_worker_redis_result_host": (["", "results.example.internal"], ["results:6380"]),
    "celery_worker_redis_username": (["", "celery", "app.worker-1"], ["celery user", "a:b"]),
    "celery_worker_redis_key_prefix": (["", "taskapp:", "team.app-1:"], ["task app:", "app*"]),
    "celery_worker_memory_max": (
        ["infinity", "512M", "1.5G", "1073741824", "40%", "12.5%"],
        ["512 MB", "512MB", "unlimited", "-1", "1.5"],
    ),
    "redis_save_points": ([["3600 1", "300 100"], []], [["3600"], ["300 100 extra"], ["1h 1"]]),
}


def test_every_rule_has_cases_and_names_a_declared_variable() -> None:
    assert set(CASES) == set(bundle_formats.FORMATS)
    declared = {n for options in bundle_validate.role_options().values() for n in options}
    assert set(bundle_formats.FORMATS) <= declared


@pytest.mark.parametrize(
    ("name", "value"), [(n, v) for n, (good, _) in CASES.items() for v in good]
)
def test_accepted(name: str, value: Any) -> None:  # noqa: ANN401
    assert bundle_formats.format_errors({name: value}) == []


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, (_, bad) in CASES.items() for v in bad])
def test_refused_with_a_message_naming_the_variable(name: str, value: Any) -> None:  # noqa: ANN401
    errors = bundle_formats.format_errors({name: value})
    assert len(errors) == 1, errors
    rule = bundle_formats.FORMATS[name]
    bad = value[0] if isinstance(value, list) else value
    assert errors[0] == (
        f"{name}: {bad!r} is not {rule.may_hold}; {rule.because}. Fix it in the inventory."
    )


def test_unset_and_wrong_types_are_left_to_other_checks() -> None:
    assert bundle_formats.format_errors({}) == []
    assert bundle_formats.format_errors({"celery_worker_app_name": None}) == []
    # A number where a string goes is the type check's to report.
    assert bundle_formats.format_errors({"celery_worker_memory_max": 512}) == []
