"""rcbundle: what every Celery app deployed by redis-celery-bundle needs at run time.

- rcbundle.config: the TOML file the roles write, read into Celery settings.
- rcbundle.loader: a Celery loader that applies those settings to any app (the worker and beat
  units select it with CELERY_LOADER, so an app needs no code of ours to run on the workers).
- rcbundle.configure(app): the one call a producer process adds (a web app, a script).
- rcbundle.transport: kombu's Redis (and Sentinel) transport with a fetch that cannot lose a
  message, consumers woken at once for any producer's message, and a restarted worker node given
  back at once what its killed process held.
- rcbundle.solo: Celery's solo pool with the soft and hard time limits.
- rcbundle.systemd: tells a Type=notify unit when its worker is ready (the loader connects it).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rcbundle.config import ENV_VAR, ConfigError, celery_config, load_settings

if TYPE_CHECKING:
    from celery import Celery

__version__ = "1.4.2"
__all__ = ["ENV_VAR", "ConfigError", "__version__", "configure"]


def configure(app: Celery, path: Path | None = None) -> Celery:
    """Give app the deployed settings (broker, results, TLS, ACL user, prefix, routes, limits).

    Reads the file ($RCBUNDLE_CONFIG, or path) now, and raises ConfigError if it is missing or
    wrong, so a process never runs on Celery's defaults by mistake. The settings win over the
    app's own for every key they set, also over a later app.config_from_object() and over
    keyword arguments given to Celery(); the app's other settings stay. Returns app.
    """
    conf = celery_config(load_settings(path))

    # Celery's hook after every (re)load of the configuration, so no source of the app's own
    # can come after it. It runs with settings already read: nothing is left to fail there.
    def apply(source: MutableMapping[str, object], **_: object) -> None:
        source.update(conf)

    app.on_after_configure.connect(apply, sender=app, weak=False)
    if cast(Any, app).configured:  # Celery's attribute, missing from celery-types
        app.conf.update(conf)
    return app
