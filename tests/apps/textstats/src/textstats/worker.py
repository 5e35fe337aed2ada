"""The Celery application. No line here is for the bundle: on the workers, the bundle's units
give it the deployed broker, results and routes through Celery's loader setting."""

from celery import Celery

celery_app = Celery("textstats", include=["textstats.tasks"])
