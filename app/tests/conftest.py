import os
import tempfile
from pathlib import Path

import pytest

_config_dir = tempfile.TemporaryDirectory(prefix="taskapp-unit-")


def pytest_configure(config: pytest.Config) -> None:
    # Before collection: pytest's attribute probing evaluates the task proxies, and a task bound
    # while the config cannot be read stays half-initialised for the rest of the process.
    path = Path(_config_dir.name) / "taskapp.toml"
    path.write_text('[redis]\nhost = "127.0.0.1"\nport = 1\npassword = "unit-tests"\n')
    os.environ["RCBUNDLE_CONFIG"] = str(path)


def pytest_unconfigure(config: pytest.Config) -> None:
    _config_dir.cleanup()
