"""What an operation sees while it runs: the appliance and the facts inspection found."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from imagebuilder.progress import Reporter


@dataclass
class GuestContext:
    """The mounted guest: `g` is a GuestSession; `os` holds inspection facts (distro, package manager …)."""

    g: Any
    reporter: Reporter
    os: dict[str, str] = field(default_factory=dict)

    def sh(self, command: str) -> str:
        """Run a shell command in the guest and pass its output on to the user."""
        output = self.g.sh(command)
        for line in output.splitlines()[-20:]:
            self.reporter.info(f"    | {line}")
        return output
