"""A Celery loader that gives any app the deployed settings: no line of code in the app.

The celery_worker and celery_beat units set CELERY_LOADER=rcbundle.loader:Loader, Celery's own
way to choose an app's loader (`celery --loader`), so `celery --app yourapp worker` runs with
the broker, results, TLS, routes and limits the roles wrote. Everything else is Celery's
AppLoader: the app's own config_from_object() and keyword arguments still apply to the keys the
deployment does not set. Celery makes the loader when the app first reads its configuration; a
missing or wrong file then raises rcbundle's ConfigError, and the process stops.
"""

from __future__ import annotations

from typing import Any

from celery.loaders.app import AppLoader

from rcbundle import configure


class Loader(AppLoader):
    def __init__(self, app: Any = None, **kwargs: object) -> None:
        super().__init__(app, **kwargs)
        configure(app)
