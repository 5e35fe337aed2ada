import os
import sys
import tempfile
from pathlib import Path

import pytest

# The repository's test kit (testkit/loopback.py: a redis-server on loopback), shared with the
# runtime library's tests.
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

_config_dir = tempfile.TemporaryDirectory(prefix="taskapp-unit-")


def pytest_configure(config: pytest.Config) -> None:
    # Before collection: pytest's attribute probing evaluates the task proxies, and a task bound
    # while the config cannot be read stays half-initialised for the rest of the process.
    path = Path(_config_dir.name) / "taskapp.toml"
    path.write_text('[redis]\nhost = "127.0.0.1"\nport = 1\npassword = "unit-tests"\n')
    os.environ["RCBUNDLE_CONFIG"] = str(path)


def pytest_unconfigure(config: pytest.Config) -> None:
    _config_dir.cleanup()
