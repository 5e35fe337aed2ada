"""The bundled tasks under Celery's stock settings: the benchmark's Stock configuration.

Started by the harness on the worker host as Celery's first-steps guide runs a
worker (`celery -A stock_app worker --loglevel=INFO`): one node, the prefork
pool with one process per CPU, stock prefetch and acknowledgement, results on.
"""

import os

import taskapp.tasks  # noqa: F401  # registers the tasks on app
from taskapp.app import app

_URL = os.environ["BENCH_STOCK_URL"]
app.config_from_object({"broker_url": _URL + "/0", "result_backend": _URL + "/1"}, force=True)
