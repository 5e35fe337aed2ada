"""The deployed settings reach an app that has no code of ours (loader) or one line (configure)."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery import Celery, signals

import rcbundle
from rcbundle.config import OWNER_OPTION, ConfigError

CONFIG = """\
[redis]
host = "redis9"
port = 6390
username = "celery"
password = "pw"
key_prefix = "shop:"

[celery]
default_queue = "orders"

[celery.task_routes]
"shop.tasks.resize" = "images"
"""


@pytest.fixture
def deployed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    monkeypatch.setenv("RCBUNDLE_CONFIG", str(path))
    return path


def _expect_deployed(app: Celery) -> None:
    conf = app.conf
    assert conf.broker_url == "redis://celery:pw@redis9:6390/0"
    assert conf.broker_transport == "rcbundle.transport:Transport"
    assert conf.broker_transport_options["global_keyprefix"] == "shop:"
    assert conf.task_default_queue == "orders"
    assert app.amqp.router.route({}, "shop.tasks.resize")["queue"].name == "images"


def test_the_loader_configures_an_app_that_names_nothing_of_ours(deployed: Path) -> None:
    app = Celery("shop", loader="rcbundle.loader:Loader", set_as_current=False)
    _expect_deployed(app)


def test_deployed_settings_win_over_the_apps_own_and_the_rest_is_kept(deployed: Path) -> None:
    app = Celery(
        "shop", loader="rcbundle.loader:Loader", broker="redis://localhost//", set_as_current=False
    )
    app.config_from_object({"broker_url": "memory://", "task_default_rate_limit": "10/s"})
    _expect_deployed(app)
    assert app.conf.task_default_rate_limit == "10/s"


def test_celery_loader_in_the_environment_selects_it(deployed: Path) -> None:
    # What the units do: CELERY_LOADER, Celery's own variable (`celery --loader` sets it).
    program = "from celery import Celery\nprint(Celery('shop').conf.broker_transport)\n"
    env = {**os.environ, "CELERY_LOADER": "rcbundle.loader:Loader"}
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "rcbundle.transport:Transport"


def test_configure_is_the_one_line_for_a_producer(deployed: Path) -> None:
    app = rcbundle.configure(Celery("shop", set_as_current=False))
    _expect_deployed(app)


def test_configure_on_an_app_already_configured_applies_at_once(deployed: Path) -> None:
    app = Celery("shop", set_as_current=False)
    assert app.conf.task_default_queue == "celery"
    rcbundle.configure(app)
    _expect_deployed(app)


def test_configure_reads_the_file_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RCBUNDLE_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match=r"absent\.toml: config file not found"):
        rcbundle.configure(Celery("shop", set_as_current=False))


def test_a_missing_file_is_an_error_not_celerys_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RCBUNDLE_CONFIG", str(tmp_path / "absent.toml"))
    app = Celery("shop", loader="rcbundle.loader:Loader", set_as_current=False)
    with pytest.raises(ConfigError, match=r"absent\.toml: config file not found"):
        _ = app.conf.broker_url


def _worker_init(app: Celery, nodename: str) -> None:
    # What `celery worker` sends from its WorkController, before it connects to the broker.
    signals.celeryd_init.send(sender=nodename, instance=SimpleNamespace(app=app), conf=app.conf,
                              options={})  # fmt: skip


def test_a_worker_on_the_loader_names_its_node_the_owner_of_what_it_fetches(
    deployed: Path,
) -> None:
    app = Celery("shop", loader="rcbundle.loader:Loader", set_as_current=False)
    assert OWNER_OPTION not in app.conf.broker_transport_options
    _worker_init(app, "default-2@host")
    options = app.conf.broker_transport_options
    assert options[OWNER_OPTION] == "default-2@host"
    assert options["global_keyprefix"] == "shop:"  # the deployed options stay


def test_producers_and_other_apps_workers_have_no_owner(deployed: Path) -> None:
    producer = rcbundle.configure(Celery("shop", set_as_current=False))
    Celery("shop", loader="rcbundle.loader:Loader", set_as_current=False)  # connects the handler
    _worker_init(producer, "default-2@host")  # a worker of an app not on rcbundle's loader
    assert OWNER_OPTION not in producer.conf.broker_transport_options
