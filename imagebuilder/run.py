"""The one wrapper through which the project runs host programs. Nothing is run through a shell; a
failure is a CommandError.

Secrets never reach a CommandError: it carries the argv and the tail of the program's output, never
its environment or its input, so a secret goes to a program through those, never on its command line.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from typing import IO, Any, BinaryIO

from imagebuilder.errors import BuildError, HostError, one_line

log = logging.getLogger(__name__)

HINTS = {
    "qemu-img": "install qemu-utils",
    "qemu-system-x86_64": "install qemu-system-x86",
    "mmdebstrap": "install mmdebstrap",
    "sqfstar": "install squashfs-tools",
    "virt-xml-validate": "install libvirt-clients",
}
TAIL_LINES = 5  # of a failed program's output, in its CommandError


class CommandError(BuildError):
    """A host program failed (exit code, or signal as a negative code) or timed out (`code` None);
    `stderr` is the tail of its error output (else of its output)."""

    def __init__(self, argv: Sequence[str], code: int | None, stderr: str = "", hint: str | None = None,
                 timeout: float | None = None):
        self.argv = tuple(argv)
        self.program = os.path.basename(self.argv[0])
        self.code, self.stderr, self.timeout = code, stderr, timeout
        if code is None:
            what = f"timed out after {timeout or 0:.0f}s"
        else:
            what = f"failed with {f'killed by signal {-code}' if code < 0 else f'exit code {code}'}"
        detail = " | ".join(stderr.splitlines())
        super().__init__(one_line(f"{shlex.join(self.argv)} {what}" + (f"; {detail}" if detail else "")), hint)


def require(program: str) -> str:
    """Return the path of `program`, or raise a HostError saying which package provides it."""
    path = shutil.which(program)
    if path is None:
        raise HostError(f"{program} not found on PATH", HINTS.get(program))
    return path


def run(argv: Sequence[str], *, capture: bool = True, timeout: float | None = None,
        env: dict[str, str] | None = None, stdin: BinaryIO | None = None, input: str | bytes | None = None,
        stdout: IO[Any] | None = None, text: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    """Run argv (never through a shell) and return its CompletedProcess; raise CommandError when it
    times out, or (with `check`) fails.

    Its input is `input`, else the file `stdin`, else none; its output goes to `stdout` if given (stderr
    is still captured), else is captured (`capture`) as text or, with text=False, bytes."""
    require(argv[0])
    log.debug("run: %s", shlex.join(argv))
    pipe = subprocess.PIPE if capture else None
    if input is None:
        stdin = subprocess.DEVNULL if stdin is None else stdin
    try:
        proc = subprocess.run(list(argv), stdin=stdin, input=input, stdout=pipe if stdout is None else stdout,
                              stderr=pipe, text=text, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, None, timeout=exc.timeout) from None
    if check and proc.returncode != 0:
        output = proc.stderr or proc.stdout or ""
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
        raise CommandError(argv, proc.returncode, "\n".join(output.strip().splitlines()[-TAIL_LINES:]))
    return proc
