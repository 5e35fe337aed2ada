"""The pki role's checks (tasks/validate.yml): how long certificates live and when they renew.

In the role's own filter_plugins/ because Ansible loads it whenever it loads the role,
whatever the configuration.

The filter returns the messages of the rules that fail, one per problem, each naming the
variable and the fix; an empty list means the input is good.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _whole(value: object) -> int | None:
    """The value if it is a whole number (true and false are not), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _within(value: object, low: int, high: object) -> bool:
    """low <= value < high, all whole numbers."""
    number, limit = _whole(value), _whole(high)
    return number is not None and limit is not None and low <= number < limit


def settings_errors(v: Mapping[str, Any]) -> list[str]:
    """Messages for the validity periods (v: the host's variables, by name)."""
    ca_days, cert_days = v.get("pki_ca_valid_days"), v.get("pki_certificate_valid_days")
    renew_days = v.get("pki_renew_within_days")
    errors: list[str] = []
    if not _within(cert_days, 1, ca_days):
        errors.append(
            f"pki_certificate_valid_days ({cert_days}) must be at least 1 and below"
            f" pki_ca_valid_days ({ca_days}): a certificate cannot outlive the CA that signed it."
        )
    if not _within(renew_days, 1, cert_days):
        errors.append(
            f"pki_renew_within_days ({renew_days}) must be at least 1 and below"
            f" pki_certificate_valid_days ({cert_days}): a host certificate is re-issued when it"
            " has fewer days left than that, so a new one must start with more, or every run"
            " would re-issue it. Leave it unset for 30."
        )
    return errors


def bundle_pki_settings_errors(variables: Mapping[str, Any]) -> list[str]:
    """Filter: vars | bundle_pki_settings_errors."""
    return settings_errors(variables)


class FilterModule:
    """The pki role's filters."""

    def filters(self) -> dict[str, Any]:
        return {"bundle_pki_settings_errors": bundle_pki_settings_errors}
