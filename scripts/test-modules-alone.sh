#!/usr/bin/env bash
# Run every integration module in a pytest session of its own, two at a time: each must pass
# without another module's fixtures or leftovers. One line per module (result, seconds, log file);
# exits non-zero if any module failed. Extra arguments go to every pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
logs=$(mktemp -d /var/tmp/imagebuilder-alone.XXXXXX)
export logs
printf '%s\n' tests/integration/test_*.py | xargs -P 2 -I{} sh -c '
    log="$logs/$(basename {} .py).log"; start=$(date +%s)
    if .venv/bin/pytest -p no:cacheprovider "$@" {} >"$log" 2>&1; then result=passed; else result=FAILED; fi
    echo "$result $(( $(date +%s) - start ))s {} $log"
    [ "$result" = passed ]' sh "$@"
