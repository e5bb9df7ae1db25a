"""The base image the benchmarks start from: the newest one the integration tests cached."""

from __future__ import annotations

import sys
from pathlib import Path

TEST_HOME = Path("/var/tmp/imagebuilder-tests")


def newest_test_base() -> Path:
    """The newest base-*.qcow2 under /var/tmp/imagebuilder-tests; exit with a hint if there is none."""
    found = sorted(TEST_HOME.glob("base-*.qcow2"), key=lambda p: p.stat().st_mtime)
    if not found:
        sys.exit("no base image: pass one on the command line, or run the integration tests once to make one")
    return found[-1]
