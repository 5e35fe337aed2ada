"""rcbundle.versions: the library refuses a Celery or kombu series it was not tested with."""

import subprocess
import sys
from importlib.metadata import version

import pytest

from rcbundle import versions


def test_the_installed_celery_and_kombu_are_the_tested_ones() -> None:
    assert versions.series(version("celery")) == versions.TESTED["celery"]
    assert versions.series(version("kombu")) == versions.TESTED["kombu"]
    assert versions.series(version("redis")) == versions.TESTED["redis"]
    versions.check()


@pytest.mark.parametrize(
    ("installed", "named"),
    [
        ({"celery": "5.8.0", "kombu": "5.7.0", "redis": "8.1.0"}, "celery 5.8.0 (tested: 5.7.x)"),
        ({"celery": "5.7.1", "kombu": "5.6.2", "redis": "8.1.0"}, "kombu 5.6.2 (tested: 5.7.x)"),
        (
            {"celery": "5.7.0", "kombu": "(not installed)", "redis": "8.1.0"},
            "kombu (not installed)",
        ),
        ({"celery": "5.7.0", "kombu": "5.7.0", "redis": "8.2.0"}, "redis 8.2.0 (tested: 8.1.x)"),
    ],
)
def test_an_untested_release_is_refused_with_the_fix(installed: dict[str, str], named: str) -> None:
    with pytest.raises(versions.UntestedVersionError) as caught:
        versions.check(installed)
    message = str(caught.value)
    assert named in message
    assert "celery>=5.7,<5.8 and kombu>=5.7,<5.8" in message
    assert "make lock APP=" in message


def test_patch_releases_of_the_tested_series_pass() -> None:
    versions.check({"celery": "5.7.9", "kombu": "5.7.12", "redis": "8.1.3"})


@pytest.mark.parametrize("module", ["rcbundle.transport", "rcbundle.sentinel", "rcbundle.solo"])
def test_the_modules_below_the_public_api_refuse_to_import_against_another_kombu(
    module: str,
) -> None:
    # A fresh interpreter whose kombu claims another release: importing the module must fail
    # with the guard's message, before any subclass of kombu's or Celery's internals is made.
    program = (
        "import importlib.metadata as m\n"
        "real = m.version\n"
        "m.version = lambda name: '5.8.0' if name == 'kombu' else real(name)\n"
        f"import {module}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "UntestedVersionError: rcbundle was not tested with kombu 5.8.0" in done.stderr
