"""A role's internal values as Ansible renders them, without a host: a one-task play on
localhost that reads the role's defaults and vars, as the role would, and writes the values
asked for as JSON. The given variables go in as extra vars, so they outrank the defaults."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from testkit import REPO, playbook

PLAY = """\
- name: Render a role's values
  hosts: localhost
  gather_facts: false
  strategy: ansible.builtin.linear
  tasks:
    - name: Read the role's defaults and internal values
      ansible.builtin.include_vars:
        file: "{{ item }}"
      loop: FILES
    - name: Write them
      ansible.builtin.copy:
        content: >-
          {{ VALUES | to_json }}
        dest: OUT
"""


def role_values(
    tmp_path: Path,
    role: str,
    values: Mapping[str, str],
    variables: Mapping[str, Any],
    plugins: Iterable[Path] = (),
) -> dict[str, Any]:
    """VALUES (name: the role's variable) of ROLE rendered with VARIABLES; PLUGINS are the
    filter plugins the values use (the role's own are loaded with the role, so a copy sits
    beside the play)."""
    (tmp_path / "filter_plugins").mkdir()
    for plugin in plugins:
        (tmp_path / "filter_plugins" / plugin.name).write_text(plugin.read_text())
    out = tmp_path / "out.json"
    files = [str(REPO / f"roles/{role}/{name}/main.yml") for name in ("defaults", "vars")]
    asked = "{" + ", ".join(f"'{name}': {value}" for name, value in values.items()) + "}"
    text = PLAY.replace("FILES", json.dumps(files)).replace("VALUES", asked)
    (tmp_path / "render.yml").write_text(text.replace("OUT", str(out)))
    (tmp_path / "vars.json").write_text(json.dumps(dict(variables)))
    proc = playbook(
        str(tmp_path / "render.yml"), "localhost,", "-c", "local", f"-e@{tmp_path / 'vars.json'}"
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result
