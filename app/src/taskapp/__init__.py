"""Celery application bundled with the deployment: see README.md."""

__version__ = "0.1.0"
