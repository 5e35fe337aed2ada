"""The Celery application: `celery --app taskapp.app:app worker`.

Like any app the bundle deploys, it names nothing of the bundle's: on the workers, rcbundle's
loader (CELERY_LOADER in the units) gives it the deployed settings. A producer process adds one
line, rcbundle.configure(app), as `python -m taskapp` does (taskapp.__main__).
"""

from celery import Celery

app = Celery("taskapp", include=["taskapp.tasks"])
