"""The fixed ports the tests use, apart for each pytest-xdist worker (the suite runs on two).

From BASE: environments +0..299, the agent tests' servers +300..359, the shared server +360,
the DynamoDB endpoint +361, EC2 "instances" played on this machine +400..499, and a few
tests' own +500..599.
"""

from __future__ import annotations

import os

WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
BASE = 25100 + 1000 * WORKER
