"""A Celery loader that gives any app the deployed settings: no line of code in the app.

The celery_worker and celery_beat units set CELERY_LOADER=rcbundle.loader:Loader, Celery's own
way to choose an app's loader (`celery --loader`), so `celery --app yourapp worker` runs with
the broker, results, TLS, routes and limits the roles wrote. Everything else is Celery's
AppLoader: the app's own config_from_object() and keyword arguments still apply to the keys the
deployment does not set. Celery makes the loader when the app first reads its configuration; a
missing or wrong file then raises rcbundle's ConfigError, and the process stops.

It also connects rcbundle.systemd, so that a `celery worker` started by a Type=notify unit
tells systemd when it is ready (a no-op in every other process, and without $NOTIFY_SOCKET).

In `celery worker` it names the node as the owner of what it fetches: Celery's celeryd_init
signal (sent by the worker's main process only, before it connects to the broker, with the node
name as sender, e.g. default-2@host) sets broker_transport_options[OWNER_OPTION] to that name.
rcbundle.transport then gives a restarted node back the messages its killed predecessor held
(see that module for why that is safe). Producers and beat send no celeryd_init: no owner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from celery import signals
from celery.loaders.app import AppLoader

from rcbundle import configure, systemd
from rcbundle.config import OWNER_OPTION

if TYPE_CHECKING:
    from celery import Celery


class Loader(AppLoader):
    def __init__(self, app: Celery, **kwargs: object) -> None:  # Celery always passes app
        super().__init__(app, **kwargs)
        configure(app)
        systemd.connect_in_workers()
        signals.celeryd_init.connect(_name_the_owner, weak=False, dispatch_uid=__name__ + ".owner")


def _name_the_owner(sender: object = None, instance: object = None, **_: object) -> None:
    app = cast("Celery | None", getattr(instance, "app", None))  # the WorkController's
    if not sender or app is None or not isinstance(app.loader, Loader):
        return  # a worker whose app is not on this loader
    conf: Any = app.conf
    # Reading first finishes loading the configuration (configure()'s settings applied), so
    # nothing loaded later replaces the option set here.
    options = dict(conf.broker_transport_options or {})
    options[OWNER_OPTION] = str(sender)
    conf.broker_transport_options = options
