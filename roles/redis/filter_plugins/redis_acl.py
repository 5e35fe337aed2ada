"""The aclfile's password rules (vars/main.yml, __redis_acl_content).

In the role's own filter_plugins/ because Ansible loads it whenever it loads the role.
"""

from __future__ import annotations

import hashlib
from typing import Any


def _hash(password: object) -> str:
    return "#" + hashlib.sha256(str(password).encode("utf-8")).hexdigest()


def redis_acl_password_hashes(password: object, previous: object = "") -> str:
    """Filter: redis_password | redis_acl_password_hashes(redis_password_previous).

    The user's password rules, SHA-256 hashes only: the current password's, then, while a
    rotation is under way (previous set), the previous one's, so that Redis accepts both
    until the clients have moved to the current one. An unset previous (empty or null)
    adds nothing; one equal to the current adds nothing either (validation refuses it).
    """
    hashes = [_hash("" if password is None else password)]
    if previous not in (None, "") and str(previous) != str(password):
        hashes.append(_hash(previous))
    return " ".join(hashes)


class FilterModule:
    """The redis role's aclfile filters."""

    def filters(self) -> dict[str, Any]:
        return {"redis_acl_password_hashes": redis_acl_password_hashes}
