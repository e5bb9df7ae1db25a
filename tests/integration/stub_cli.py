"""The imagebuilder command line with the customize stage replaced by a pause, in a process of its own.

For fault tests that need the real CLI as a user runs it (signals, kill -9, two builds at once) but
not the appliance: everything else (fetch, the cache, qemu-img, libvirt, clean-up) is real.
`IBTEST_CUSTOMIZE_SECONDS` sets the pause. Run as `python -m tests.integration.stub_cli ARGS…`.
"""

from __future__ import annotations

import os
import sys
import time

from imagebuilder import cli, pipeline


def _customize(*_args: object, **_kwargs: object) -> dict[str, str]:
    print("customize: stubbed (no appliance)", file=sys.stderr, flush=True)
    time.sleep(float(os.environ.get("IBTEST_CUSTOMIZE_SECONDS", "0")))
    return {}


pipeline.customize = _customize

if __name__ == "__main__":
    cli.main()
