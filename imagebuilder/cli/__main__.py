"""`python -m imagebuilder.cli`, as the tests, the benchmarks and `schedule install` (without a script) run it."""

import sys

from imagebuilder.cli import main

if __name__ == "__main__":
    sys.exit(main())
