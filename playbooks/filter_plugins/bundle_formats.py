"""What each string the roles put on a command line, in a unit, a path or a config file may
hold: one table, checked by the validate play (filter ``bundle_format_errors``) and printed
in README.md's "What each value may hold" (scripts/role_docs.py renders it from FORMATS).

A value of the right type can still break a host: a space in a name splits a command line,
a host name where an address goes fails in the certificate step, a typo in a size stops a
unit from starting. Each rule says what the value may hold and why, so the message tells
the user what to write instead.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2.exceptions import TemplateError

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def _pattern(regex: str) -> Callable[[str], bool]:
    compiled = re.compile(regex)
    return lambda text: compiled.fullmatch(text) is not None


def _host_or_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return _HOST.fullmatch(text) is not None
    return True


@dataclass(frozen=True)
class Format:
    accepts: Callable[[str], bool]
    may_hold: str
    because: str
    empty_ok: bool = False  # empty means "unset" (another rule or the role says what then)


_APP_NAME = Format(
    _pattern(r"[a-z][a-z0-9_-]{0,31}"),
    "a lower-case name of at most 32 letters, digits, - and _, starting with a letter",
    "it names the app's system user and its directories under /opt and /etc",
)
_APP_MODULE = Format(
    _pattern(rf"{_IDENT}(?:\.{_IDENT})*(?::{_IDENT})?"),
    "a Python module path, optionally with :attribute (for example myapp.celery:app)",
    "celery --app imports it",
)
_HOST_FORMAT = Format(
    _host_or_address,
    "a host name (letters, digits, - and dots) or an IP address, without a port",
    "the app's broker and result URLs name it",
)

FORMATS: dict[str, Format] = {
    "celery_worker_app_name": _APP_NAME,
    "celery_worker_app_module": _APP_MODULE,
    "celery_worker_redis_host": _HOST_FORMAT,
    "celery_worker_redis_result_host": Format(
        _host_or_address, _HOST_FORMAT.may_hold, _HOST_FORMAT.because, empty_ok=True
    ),
    "celery_worker_redis_username": Format(
        _pattern(r"[A-Za-z0-9_.@-]+"),
        "letters, digits and . _ - @ (empty in requirepass mode)",
        "Redis ACL user names hold no spaces, and the URL carries it",
        empty_ok=True,
    ),
    "celery_worker_redis_key_prefix": Format(
        _pattern(r"[A-Za-z0-9_.:-]+"),
        "letters, digits and . : - _ (empty for no prefix)",
        "the Redis ACL confines the Celery user to keys starting with it",
        empty_ok=True,
    ),
    "celery_worker_memory_max": Format(
        _pattern(r"infinity|[0-9]+|[0-9]+(?:\.[0-9]+)?[KMGT]|[0-9]+(?:\.[0-9]+)?%"),
        "infinity, a size in bytes with an optional K, M, G or T suffix (512M), or a percentage"
        " of the host's memory (40%)",
        "it becomes the worker units' MemoryMax=, and systemd refuses the unit otherwise",
    ),
    "redis_save_points": Format(
        _pattern(r"[0-9]+ [0-9]+"),
        "entries of two whole numbers, 'SECONDS CHANGES' (for example '300 100')",
        "each entry becomes a save line of redis.conf, and Redis refuses to start otherwise",
    ),
}


def format_errors(variables: Mapping[str, Any]) -> list[str]:
    """Messages for the variables set to a string (or list of strings) their rule refuses."""
    errors: list[str] = []
    for name, rule in FORMATS.items():
        try:
            if name not in variables or variables[name] is None:
                continue
            value = variables[name]
        except TemplateError:
            continue  # left to the role's own checks, as the type check does
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if not isinstance(item, str):
                continue  # a wrong type is the type check's to report
            if (item == "" and rule.empty_ok) or (item != "" and rule.accepts(item)):
                continue
            errors.append(
                f"{name}: {item!r} is not {rule.may_hold}; {rule.because}. Fix it in the inventory."
            )
    return errors


def bundle_format_errors(variables: Mapping[str, Any]) -> list[str]:
    """Filter: vars | bundle_format_errors -> a message per value its rule refuses."""
    return format_errors(variables)


class FilterModule:
    """The bundle's format rules."""

    def filters(self) -> dict[str, Any]:
        return {"bundle_format_errors": bundle_format_errors}
