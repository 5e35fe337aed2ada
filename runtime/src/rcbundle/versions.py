"""The Celery, kombu and redis-py releases this library was tested with, and the check that
refuses others.

rcbundle.transport subclasses kombu's Redis channel, rcbundle.sentinel extends redis-py's
Sentinel pools and rcbundle.solo Celery's solo pool; all lean on behaviour below those
projects' public API. A release outside the tested series could
change it silently, so importing either module against one fails at once with this message.
"""

from importlib.metadata import PackageNotFoundError, version

# distribution -> the major.minor series tested (runtime/tests, the Molecule scenarios).
TESTED = {"celery": "5.7", "kombu": "5.7", "redis": "8.1"}


class UntestedVersionError(ImportError):
    """A Celery, kombu or redis-py release this rcbundle release was not tested with."""


def series(text: str) -> str:
    return ".".join(text.split(".")[:2])


def check(installed: dict[str, str] | None = None) -> None:
    """Raise UntestedVersionError unless every TESTED distribution is in its series."""
    if installed is None:
        installed = {}
        for name in TESTED:
            try:
                installed[name] = version(name)
            except PackageNotFoundError:
                installed[name] = "(not installed)"
    wrong = [
        f"{name} {installed[name]} (tested: {want}.x)"
        for name, want in TESTED.items()
        if series(installed[name]) != want
    ]
    if wrong:
        raise UntestedVersionError(
            "rcbundle was not tested with " + ", ".join(wrong) + ": pin "
            + " and ".join(f"{name}>={want},<{_next(want)}" for name, want in TESTED.items())
            + " in your app's dependencies and re-run `make lock APP=...`, or upgrade rcbundle"
        )  # fmt: skip


def _next(series_text: str) -> str:
    major, minor = series_text.split(".")
    return f"{major}.{int(minor) + 1}"
