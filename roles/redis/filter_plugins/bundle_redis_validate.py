"""The redis role's checks that need more than a comparison (tasks/validate.yml).

In the role's own filter_plugins/ because Ansible loads it whenever it loads the
role, whatever the configuration.
"""

from __future__ import annotations

import ipaddress
from typing import Any

WILDCARDS = {"0.0.0.0", "::", "*"}


def bundle_redis_bind_errors(binds: object) -> list[str]:
    """Filter: redis_bind | bundle_redis_bind_errors. One message per entry Redis or the
    bundle's certificates step would refuse, or that would expose Redis to every network."""
    entries = binds if isinstance(binds, list | tuple) else [binds]
    errors = []
    for entry in entries:
        text = str(entry)
        if text in WILDCARDS:
            errors.append(
                f"redis_bind: {text!r} is a wildcard: list the addresses Redis serves instead."
                " Leave redis_bind empty for loopback plus the host's primary address."
            )
            continue
        try:
            ipaddress.ip_address(text)
        except ValueError:
            errors.append(
                f"redis_bind: {text!r} is not an IP address. Redis binds addresses, and each"
                " one goes into the server's TLS certificate as an IP address: use the host's"
                " address (for example 10.0.0.5), or leave redis_bind empty for loopback plus"
                " the host's primary address."
            )
    return errors


class FilterModule:
    """The redis role's filters."""

    def filters(self) -> dict[str, Any]:
        return {"bundle_redis_bind_errors": bundle_redis_bind_errors}
