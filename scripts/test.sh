#!/usr/bin/env bash
# Set up this machine, then run the whole test suite: unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/pytest "$@"
