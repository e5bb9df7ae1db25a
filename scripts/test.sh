#!/usr/bin/env bash
# Set up this machine, then run the whole test suite: unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/pytest --durations=25 "$@"  # the slowest tests are listed: the suite must stay under 30 minutes
