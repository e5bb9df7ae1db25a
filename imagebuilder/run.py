"""The one wrapper through which the project runs host programs: run() to completion, spawn() to read
output as it comes. Nothing is run through a shell; a failure is a CommandError.

Secrets never reach a CommandError: it carries the argv and the tail of the program's output, never
its environment or its input, so a secret goes to a program through those, never on its command line.
"""

from __future__ import annotations

import logging
import os
import select
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any, BinaryIO

from imagebuilder.errors import BuildError, HostError, one_line

log = logging.getLogger(__name__)

HINTS = {
    "qemu-img": "install qemu-utils",
    "qemu-system-x86_64": "install qemu-system-x86",
    "mmdebstrap": "install mmdebstrap",
    "arch-test": "install arch-test",
    "grub-mkimage": "install grub-common",
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


def tail(output: str | bytes) -> str:
    """The last TAIL_LINES lines of a program's output, as text."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    return "\n".join(text.strip().splitlines()[-TAIL_LINES:])


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
        raise CommandError(argv, proc.returncode, tail(proc.stderr or proc.stdout or ""))
    return proc


class Child(subprocess.Popen):
    """A program started by spawn(): a Popen whose output is read a chunk at a time, within a bound."""

    deadline: float | None = None  # time.monotonic() past which read() no longer waits

    def read(self, timeout: float | None = None, stream: IO[bytes] | None = None) -> bytes | None:
        """The next bytes of stdout (or `stream`), b"" at its end, or None if none came within timeout
        seconds or before the deadline."""
        stream = self.stdout if stream is None else stream
        assert stream is not None
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                return None
            timeout = left if timeout is None else min(timeout, left)
        ready, _, _ = select.select([stream], [], [], timeout)
        return os.read(stream.fileno(), 4096) if ready else None

    def stop(self) -> None:
        """Kill the program if it still runs, reap it and close its pipes."""
        if self.poll() is None:
            log.debug("spawn: killing %s (pid %d)", self.args[0], self.pid)
            self.kill()
        self.wait()
        for stream in (self.stdout, self.stderr):
            if stream:
                stream.close()


@contextmanager
def spawn(argv: Sequence[str], *, timeout: float | None = None,
          env: dict[str, str] | None = None) -> Iterator[Child]:
    """Start argv (no shell, no input) with stdout and stderr as pipes, for the caller to read as they
    come; reads wait at most until `timeout` seconds from now. When the block ends, normally or not,
    the program is killed if it still runs, and reaped: nothing is left running."""
    require(argv[0])
    log.debug("spawn: %s", shlex.join(argv))
    child = Child(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    if timeout is not None:
        child.deadline = time.monotonic() + timeout
    try:
        yield child
    finally:
        child.stop()
