"""The controller as one more client of a lab: the config file the roles wrote on a worker host,
pointed at Redis through the ports the lab publishes on the controller's loopback.

A producer reading the workers' own file routes exactly as they consume, with their user, key
prefix and limits. Parsed and rewritten key by key (rcbundle.config reads the result), never
edited as text.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from testkit import on

# Where the roles write the bundled app's configuration (/etc/APP/config.toml).
CONFIG = "/etc/taskapp/config.toml"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def worker_config(
    host: str,
    *,
    port: int,
    result_port: int = 0,
    pki: Path | None = None,
    path: str = CONFIG,
) -> dict[str, Any]:
    """HOST's config file as data, for the controller: Redis at 127.0.0.1:port.

    result_port: the results server's published port, when the file names one of its own
    (0: the broker's). pki: the bundle's PKI directory on the controller, when the file turns
    TLS on: the controller then presents HOST's own certificate from it.
    """
    data: dict[str, Any] = tomllib.loads(on(host, f"cat {path}"))
    redis = data["redis"]
    if (redis.get("result_host") or redis.get("result_port")) and not result_port:
        raise ValueError(
            f"{host}:{path} names a separate results server: give its published result_port"
        )
    redis.update(host="127.0.0.1", port=port)
    if result_port:
        redis.update(result_host="", result_port=result_port)
    tls = redis.get("tls", {})
    if tls.get("enabled"):
        if pki is None:
            raise ValueError(f"{host}:{path} turns TLS on: give the PKI directory (pki=...)")
        tls.update(
            ca_file=str(pki / "ca.crt"),
            cert_file=str(pki / f"{host}.crt"),
            key_file=str(pki / f"{host}.key"),
        )
    return data


def write_toml(data: Mapping[str, Any], dest: Path) -> Path:
    """data (tables of strings, integers and booleans) as a TOML file at dest; dest."""
    dest.write_text(toml_text(data))
    return dest


def toml_text(data: Mapping[str, Any]) -> str:
    """data (tables of strings, integers and booleans) as TOML text that reads back as data."""
    lines: list[str] = []
    _table(lines, [], data)
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != data:
        raise ValueError("the TOML written does not read back as the data given")
    return text


def _table(lines: list[str], path: list[str], table: Mapping[str, Any]) -> None:
    if path:
        lines += ["", f"[{'.'.join(map(_key, path))}]"]
    for key, value in table.items():
        if not isinstance(value, Mapping):
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in table.items():
        if isinstance(value, Mapping):
            _table(lines, [*path, key], value)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _string(value)
    raise TypeError(f"no TOML form here for {type(value).__name__} {value!r}")


def _string(text: str) -> str:
    # JSON's escapes are TOML's, but for DEL, which TOML wants escaped too.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
