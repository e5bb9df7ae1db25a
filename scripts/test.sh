#!/usr/bin/env bash
# Set up this machine, then run the whole test suite: unit and integration tests.
# The suite must stay under 30 minutes on CI's 2 cores: the slowest tests are listed, each test has a
# time limit (pytest-timeout, in pyproject.toml), and the time used is printed against that budget.
# One worker per core (pytest-xdist): a TCG guest or appliance keeps one core busy, so two run at once.
# Whole modules go to the workers, heaviest first by tests/module-times.json (tests/module_times.py):
# a module's fixtures are set up once, and the longest modules do not end the run alone.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "== imagebuilder doctor"
.venv/bin/imagebuilder doctor || echo "doctor: something above blocks builds; the tests that need it will fail"
start=$(date +%s)
rc=0
.venv/bin/pytest -n auto --dist loadfile --no-loadscope-reorder --durations=25 "$@" || rc=$?
used=$(( $(date +%s) - start ))
printf 'test suite: %dm%02ds of the 30-minute budget (exit %d)\n' $((used / 60)) $((used % 60)) "$rc"
exit "$rc"
