"""Tasks: word counts, and URL slugs through a third-party library (python-slugify)."""

import time
from collections import Counter

from slugify import slugify

from textstats.worker import celery_app


@celery_app.task(name="textstats.tasks.words")
def words(text: str, top: int = 3) -> dict[str, object]:
    """How many words, and the most common ones (ties in order of first appearance)."""
    counted = Counter(text.lower().split())
    return {"words": sum(counted.values()), "top": [w for w, _ in counted.most_common(top)]}


@celery_app.task(name="textstats.tasks.slug")
def slug(title: str) -> str:
    """A URL slug of title: ASCII, lower case, words joined by hyphens."""
    return str(slugify(title))


@celery_app.task(name="textstats.tasks.wait")
def wait(seconds: float) -> float:
    """Sleeps: a stand-in for a long task (the scenario's time-limit test sends it)."""
    time.sleep(seconds)
    return seconds
