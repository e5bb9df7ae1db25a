"""What an operation sees while it runs: the appliance, the facts inspection found, and build state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from imagebuilder.errors import GuestError
from imagebuilder.progress import Reporter

_STATUS = "imagebuilder-exit-status:"


def shell_line(command: str) -> str:
    """What `GuestContext.sh` asks the guest's /bin/sh to run: the command in a subshell, stderr merged
    into stdout (so the output keeps its order), then its exit status. libguestfs alone would report
    only stderr of a failing command, and no exit code."""
    return f"(\n{command}\n) 2>&1; echo {_STATUS}$?"


@dataclass
class GuestContext:
    """The mounted guest.

    `g` is a GuestSession; `os` holds inspection facts (distro, package manager …); `state` is what
    operations share during one build: the password crypto, whether the package lists are fresh.
    """

    g: Any
    reporter: Reporter
    os: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    def sh(self, command: str) -> str:
        """Run a shell command in the guest and pass its output (stdout and stderr) on to the user;
        a non-zero exit raises GuestError with the exit code and the last lines of the output."""
        output = self.g.sh(shell_line(command))
        body, found, status = output.rpartition(_STATUS)
        if not found:
            return self._show(output)
        self._show(body)
        code = status.strip()
        if code != "0":
            tail = [line.strip() for line in body.splitlines() if line.strip()][-3:]
            raise GuestError(f"exit code {code}" + (f"; output: {' | '.join(tail)}" if tail else ", no output"))
        return body

    def command(self, argv: list[str]) -> str:
        """Run a program in the guest (no shell) and pass its output on to the user."""
        return self._show(self.g.command(argv))

    def _show(self, output: str) -> str:
        for line in output.splitlines()[-20:]:
            self.reporter.info(f"    | {line}")
        return output
