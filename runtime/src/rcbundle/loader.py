"""A Celery loader that gives any app the deployed settings: no line of code in the app.

The celery_worker and celery_beat units set CELERY_LOADER=rcbundle.loader:Loader, Celery's own
way to choose an app's loader (`celery --loader`), so `celery --app yourapp worker` runs with
the broker, results, TLS, routes and limits the roles wrote. Everything else is Celery's
AppLoader: the app's own config_from_object() and keyword arguments still apply to the keys the
deployment does not set. Celery makes the loader when the app first reads its configuration; a
missing or wrong file then raises rcbundle's ConfigError, and the process stops.

It also connects rcbundle.systemd, so that a `celery worker` started by a Type=notify unit
tells systemd when it is ready (a no-op in every other process, and without $NOTIFY_SOCKET).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from celery.loaders.app import AppLoader

from rcbundle import configure, systemd

if TYPE_CHECKING:
    from celery import Celery


class Loader(AppLoader):
    def __init__(self, app: Celery, **kwargs: object) -> None:  # Celery always passes app
        super().__init__(app, **kwargs)
        configure(app)
        systemd.connect_in_workers()
