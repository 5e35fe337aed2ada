"""textstats: a small Celery app that knows nothing of the bundle that deploys it."""
