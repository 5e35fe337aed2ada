"""The Celery application: `celery --app taskapp.app:app worker`."""

from collections.abc import Iterator, Mapping
from functools import cached_property

from celery import Celery

from taskapp.config import celery_config, load_settings


class _LazyConfig(Mapping[str, object]):
    """Celery settings read from the TOML file the first time Celery asks for one."""

    @cached_property
    def _conf(self) -> dict[str, object]:
        return celery_config(load_settings())

    def __getitem__(self, key: str) -> object:
        return self._conf[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._conf)

    def __len__(self) -> int:
        return len(self._conf)


app = Celery("taskapp", include=["taskapp.tasks"])
# Read on first use of app.conf, not at import: importing the tasks needs no file, and a worker
# without a valid file fails with ConfigError instead of falling back to Celery's defaults.
app.config_from_object(_LazyConfig())
