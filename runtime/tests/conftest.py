"""rcbundle's own tests: no lab, no app of ours; the integration tests start a real redis-server."""

import sys
from pathlib import Path

# The repository's test kit (testkit/loopback.py: redis-server and Sentinel on loopback), shared
# with the bundled app's tests.
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
