#!/usr/bin/env bash
# Set up this machine, then build recipes/demo.toml and boot it (replacing an earlier demo).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/imagebuilder build recipes/demo.toml --force "$@"
