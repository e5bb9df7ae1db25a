"""The one wrapper through which the project runs host programs."""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from typing import BinaryIO

from imagebuilder.errors import BuildError, HostError

log = logging.getLogger(__name__)

HINTS = {
    "qemu-img": "install qemu-utils",
    "qemu-system-x86_64": "install qemu-system-x86",
    "mmdebstrap": "install mmdebstrap",
    "sqfstar": "install squashfs-tools",
    "virt-xml-validate": "install libvirt-clients",
}


def require(program: str) -> str:
    """Return the path of `program`, or raise a HostError saying which package provides it."""
    path = shutil.which(program)
    if path is None:
        raise HostError(f"{program} not found on PATH", HINTS.get(program))
    return path


def run(argv: Sequence[str], *, capture: bool = True, timeout: float | None = None,
        env: dict[str, str] | None = None, stdin: BinaryIO | None = None) -> subprocess.CompletedProcess[str]:
    """Run argv (never through a shell), its input from `stdin` if given, else none; on failure raise
    BuildError with the command and its output."""
    require(argv[0])
    log.debug("run: %s", shlex.join(argv))
    try:
        proc = subprocess.run(list(argv), capture_output=capture, text=True, timeout=timeout,
                              env=env, stdin=subprocess.DEVNULL if stdin is None else stdin)
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{shlex.join(argv)} timed out after {exc.timeout:.0f}s") from None
    if proc.returncode != 0:
        how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exit code {proc.returncode}")
        output = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:] if capture else []
        detail = ("; " + " | ".join(output)) if output else ""
        raise BuildError(f"{shlex.join(argv)} failed with {how}{detail}")
    return proc
