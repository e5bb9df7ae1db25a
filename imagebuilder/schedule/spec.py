"""A schedule and the text of its two units, every value escaped for systemd; the marker and metadata
that identify a unit file this tool wrote; the exit codes the service's build uses."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagebuilder import errors
from imagebuilder.errors import InputError

MARKER = ("# Written by `imagebuilder schedule install`; `imagebuilder schedule remove` deletes it. "
          "Change it with `systemctl edit` (a drop-in), not here.")
META_PREFIX = "# imagebuilder-schedule: "
META_VERSION = 1

EXIT_NO_CHANGE = 0    # `build --if-changed`: nothing changed, nothing built
EXIT_FAILED = 1       # the build or the host failed
EXIT_BAD_INPUT = 2    # the recipe or an option is wrong
EXIT_BUILT = errors.EXIT_BUILT  # `build --if-changed` built a new image; a success too

DEFAULT_RANDOMIZED_DELAY = "15min"
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")   # an ExecStart word that needs no quotes
_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def escape_specifiers(text: str) -> str:
    """Text for a setting in which systemd expands `%` specifiers (Description, WorkingDirectory, ...)."""
    return text.replace("%", "%%")


def quote_exec_word(word: str) -> str:
    """One ExecStart argument, as systemd's command-line parser will give it back to the program.

    Plain words stay as they are (with `%` doubled); others are double-quoted, with backslash, quote
    and control characters C-escaped, `%` doubled (specifiers) and `$` doubled (variable expansion).
    """
    if _SAFE_WORD.match(word):
        return escape_specifiers(word)
    out = []
    for char in word:
        if char in _C_ESCAPES:
            out.append(_C_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        elif char == "%":
            out.append("%%")
        elif char == "$":
            out.append("$$")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def check_unit_value(what: str, text: str) -> str:
    """Refuse text that a unit file cannot hold as one setting's value."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise InputError(f"{what} {text!r} contains a control character, which a systemd unit cannot hold")
    if text != text.strip() or text.endswith("\\"):
        raise InputError(f"{what} {text!r} starts or ends with a blank or a backslash, "
                         "which a systemd unit setting cannot hold")
    return text


@dataclass(frozen=True)
class Schedule:
    """Everything the two units say; made by `plan()`, which validates it."""

    name: str                      # the units' name without suffix: NAME.service and NAME.timer
    recipe: Path                   # absolute
    on_calendar: str               # as the user wrote it (checked by systemd-analyze)
    command: tuple[str, ...]       # the absolute command that runs imagebuilder
    flock: str                     # the absolute path of flock
    randomized_delay: str = DEFAULT_RANDOMIZED_DELAY
    user: bool = False

    @property
    def build_argv(self) -> list[str]:
        """What the service runs under the lock."""
        return [*self.command, "build", str(self.recipe), "--if-changed"]

    @property
    def lock_file(self) -> str:
        """The lock, one per recipe file; `%t` is /run for the system and $XDG_RUNTIME_DIR for a user."""
        digest = hashlib.sha256(str(self.recipe).encode()).hexdigest()[:16]
        return f"%t/imagebuilder-{digest}.lock"

    def exec_start(self) -> str:
        """The service's ExecStart value. `--close`: the lock is not inherited by what the build starts
        (a qemu:///session daemon it spawns would otherwise hold it forever)."""
        words = [quote_exec_word(self.flock), "--close", self.lock_file]
        return " ".join(words + [quote_exec_word(word) for word in self.build_argv])

    def metadata(self) -> dict[str, Any]:
        """The JSON header both units carry; what `schedule list` shows."""
        return {"version": META_VERSION, "name": self.name, "recipe": str(self.recipe),
                "on_calendar": self.on_calendar, "randomized_delay": self.randomized_delay,
                "command": list(self.build_argv), "user": self.user}

    def _header(self) -> list[str]:
        return [MARKER, META_PREFIX + json.dumps(self.metadata(), sort_keys=True)]

    def service_text(self) -> str:
        """NAME.service: one build, under the recipe's lock, logging to the journal."""
        lines = self._header() + [
            "[Unit]",
            f"Description={escape_specifiers(f'imagebuilder: rebuild {self.recipe} if its inputs changed')}",
        ]
        if not self.user:   # the user manager has neither of these
            lines += ["Wants=network-online.target",
                      "After=network-online.target libvirtd.service virtqemud.service"]
        lines += [
            "",
            "[Service]",
            "Type=oneshot",
            f"WorkingDirectory={escape_specifiers(str(self.recipe.parent))}",
            f"ExecStart={self.exec_start()}",
            f"# `build --if-changed` exits {EXIT_BUILT} after building a new image, 0 when nothing changed: "
            "both are successes.",
            f"SuccessExitStatus={EXIT_BUILT}",
            "StandardOutput=journal",
            "StandardError=journal",
            f"SyslogIdentifier={self.name}",
        ]
        return "\n".join(lines) + "\n"

    def timer_text(self) -> str:
        """NAME.timer: when to run NAME.service; catches up after downtime (Persistent)."""
        lines = self._header() + [
            "[Unit]",
            f"Description={escape_specifiers(f'imagebuilder: scheduled rebuild of {self.recipe}')}",
            "",
            "[Timer]",
            f"OnCalendar={escape_specifiers(self.on_calendar)}",
            "Persistent=true",
            f"RandomizedDelaySec={escape_specifiers(self.randomized_delay)}",
            f"Unit={self.name}.service",
            "",
            "[Install]",
            "WantedBy=timers.target",
        ]
        return "\n".join(lines) + "\n"
