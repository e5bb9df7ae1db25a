"""Scheduled rebuilds: a systemd timer and service pair that run `imagebuilder build RECIPE --if-changed`.

The unit text is built here, every value escaped for systemd: `%` is doubled wherever specifiers are
expanded, and each ExecStart argument that needs it is double-quoted with C escapes and `$` doubled,
so a recipe path with spaces, quotes, `%` or `$` reaches the build intact. Every file this module
writes starts with MARKER and one JSON line of metadata; `list` and `remove` only ever look at or
delete files that carry that marker, never a unit somebody else wrote.

The service holds a lock per recipe (`flock` on `%t/imagebuilder-HASH.lock`, %t being /run or the
user's runtime directory) while it builds, so two schedules of one recipe never build at once; a run
that finds the lock taken waits for it, then usually finds nothing changed. systemd itself never
starts a service that is still running, so one timer cannot overlap with itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imagebuilder import errors
from imagebuilder.errors import BuildError, HostError, InputError
from imagebuilder.run import run

MARKER = ("# Written by `imagebuilder schedule install`; `imagebuilder schedule remove` deletes it. "
          "Change it with `systemctl edit` (a drop-in), not here.")
META_PREFIX = "# imagebuilder-schedule: "
META_VERSION = 1

EXIT_NO_CHANGE = 0    # `build --if-changed`: nothing changed, nothing built
EXIT_FAILED = 1       # the build or the host failed
EXIT_BAD_INPUT = 2    # the recipe or an option is wrong
EXIT_BUILT = errors.EXIT_BUILT  # `build --if-changed` built a new image; a success too

SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_RANDOMIZED_DELAY = "15min"
_UNIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")   # an ExecStart word that needs no quotes
_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


# ---------------------------------------------------------------------------------------------
# Escaping


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


def _check_unit_value(what: str, text: str) -> str:
    """Refuse text that a unit file cannot hold as one setting's value."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise InputError(f"{what} {text!r} contains a control character, which a systemd unit cannot hold")
    if text != text.strip() or text.endswith("\\"):
        raise InputError(f"{what} {text!r} starts or ends with a blank or a backslash, "
                         "which a systemd unit setting cannot hold")
    return text


# ---------------------------------------------------------------------------------------------
# The schedule and its two units


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


def default_unit_dir(user: bool) -> Path:
    """/etc/systemd/system, or with `user` the directory the user's systemd reads ($XDG_CONFIG_HOME)."""
    if not user:
        return SYSTEM_UNIT_DIR
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def default_name(image_name: str) -> str:
    """imagebuilder-IMAGE, with characters a unit name cannot have turned into `-`."""
    return "imagebuilder-" + re.sub(r"[^A-Za-z0-9_.:-]", "-", image_name)


def check_name(name: str) -> str:
    """A unit name without suffix; `NAME.timer` or `NAME.service` is accepted and trimmed."""
    for suffix in (".timer", ".service"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if not _UNIT_NAME.match(name):
        raise InputError(f"--name {name!r}: a unit name is letters, digits and _ . : - "
                         "(starting with a letter or digit, at most 200)")
    return name


def imagebuilder_command() -> tuple[str, ...]:
    """The absolute command that runs this imagebuilder from systemd, which has no venv on its PATH.

    In order: the `imagebuilder` script this process was started as; the one beside this Python (a
    venv's bin/); the one on PATH; else this Python with `-m imagebuilder.cli`. Paths are made absolute
    but symlinks are kept: resolving a venv's python would leave the venv.
    """
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "imagebuilder" and os.path.isfile(argv0) and os.access(argv0, os.X_OK):
        return (os.path.abspath(argv0),)
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "imagebuilder")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return (beside,)
    found = shutil.which("imagebuilder")
    if found:
        return (os.path.abspath(found),)
    return (os.path.abspath(sys.executable), "-m", "imagebuilder.cli")


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        raise HostError("systemd-analyze not found on PATH; it checks the --on-calendar value",
                        "install systemd")
    return path


def check_calendar(spec: str) -> str:
    """Check spec with `systemd-analyze calendar`; return when it next elapses (its own words)."""
    _check_unit_value("--on-calendar", spec)
    if not spec:
        raise InputError("--on-calendar is empty", "for example daily, weekly or 'Mon..Fri *-*-* 03:00'")
    try:
        proc = run([_systemd_analyze(), "calendar", spec], timeout=30)
    except BuildError:
        raise InputError(f"--on-calendar {spec!r}: not a systemd calendar specification",
                         "see `man systemd.time`; for example daily, weekly or 'Mon..Fri *-*-* 03:00'") from None
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Next elapse":
            return value.strip()
    return "never"


def check_timespan(text: str) -> str:
    """Check a RandomizedDelaySec value (such as 15min, 1h, 0) with `systemd-analyze timespan`."""
    _check_unit_value("--randomized-delay", text)
    try:
        run([_systemd_analyze(), "timespan", text], timeout=30)
    except BuildError:
        raise InputError(f"--randomized-delay {text!r}: not a systemd time span",
                         "for example 0, 90s, 15min or 1h") from None
    return text


def plan(recipe_file: Path, image_name: str, on_calendar: str, *, name: str | None = None,
         randomized_delay: str = DEFAULT_RANDOMIZED_DELAY, user: bool = False) -> tuple[Schedule, str]:
    """The schedule for a recipe that has already been loaded (validated), and when it next runs."""
    recipe_path = Path(os.path.abspath(recipe_file))
    _check_unit_value("recipe path", str(recipe_path))
    unit_name = check_name(name if name is not None else default_name(image_name))
    next_elapse = check_calendar(on_calendar)
    check_timespan(randomized_delay)
    flock = shutil.which("flock")
    if flock is None:
        raise HostError("flock not found on PATH; the service locks the recipe with it", "install util-linux")
    schedule = Schedule(name=unit_name, recipe=recipe_path, on_calendar=on_calendar,
                        command=imagebuilder_command(), flock=os.path.abspath(flock),
                        randomized_delay=randomized_delay, user=user)
    return schedule, next_elapse


# ---------------------------------------------------------------------------------------------
# Unit files on disk


def read_metadata(path: Path) -> dict[str, Any] | None:
    """The metadata of a unit file this tool wrote; None for any other file (or none at all)."""
    try:
        with open(path, encoding="utf-8") as file:
            first, second = file.readline().rstrip("\n"), file.readline().rstrip("\n")
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
        return None
    if first != MARKER or not second.startswith(META_PREFIX):
        return None
    try:
        meta = json.loads(second[len(META_PREFIX):])
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def _unit_files(unit_dir: Path, name: str) -> list[Path]:
    return [unit_dir / f"{name}.service", unit_dir / f"{name}.timer"]


def _refuse_foreign(paths: list[Path], name: str) -> None:
    for path in paths:
        if (path.exists() or path.is_symlink()) and read_metadata(path) is None:
            raise InputError(f"{path} exists and was not written by imagebuilder; it is left alone",
                             f"choose another --name than {name!r}")


def _write_atomically(path: Path, text: str) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def systemd_running() -> bool:
    """True when systemd is the init system here (what sd_booted() checks)."""
    return os.path.isdir("/run/systemd/system")


def _systemctl(user: bool) -> list[str]:
    return ["systemctl", "--user"] if user else ["systemctl"]


def _why_not_systemctl(unit_dir: Path, user: bool) -> str:
    """Why systemctl should not be run for units in unit_dir; empty when it should."""
    if not systemd_running():
        return "systemd is not running here (it is not PID 1)"
    if os.path.realpath(unit_dir) != os.path.realpath(default_unit_dir(user)):
        return f"systemd does not read units from {unit_dir} by default"
    return ""


def activation_commands(name: str, user: bool) -> list[list[str]]:
    """What makes systemd load the units and start the timer."""
    return [[*_systemctl(user), "daemon-reload"], [*_systemctl(user), "enable", "--now", f"{name}.timer"]]


@dataclass
class Outcome:
    """What install or remove did, and the systemctl commands left for the user to run."""

    files: list[Path] = field(default_factory=list)
    updated: bool = False                 # install: replaced units it had written before
    activated: bool = False               # systemctl was run here
    why_not: str = ""                     # why systemctl was not run here
    todo: list[list[str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def install(schedule: Schedule, unit_dir: Path) -> Outcome:
    """Write NAME.service and NAME.timer into unit_dir, then enable and start the timer where systemd runs.

    Units of the same name written by this tool are replaced; any other file of that name is refused.
    systemctl runs only where systemd is PID 1 and unit_dir is the directory it reads; otherwise the
    outcome lists the commands to run.
    """
    service, timer = _unit_files(unit_dir, schedule.name)
    _refuse_foreign([service, timer], schedule.name)
    outcome = Outcome(files=[service, timer], updated=service.exists() or timer.exists())
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        _write_atomically(service, schedule.service_text())
        _write_atomically(timer, schedule.timer_text())
    except PermissionError as exc:
        raise HostError(f"cannot write units into {unit_dir}: {exc.strerror}",
                        "run as root, or pass --user (or --unit-dir)") from None
    commands = activation_commands(schedule.name, schedule.user)
    outcome.why_not = _why_not_systemctl(unit_dir, schedule.user)
    if outcome.why_not:
        outcome.todo = commands
        return outcome
    for argv in commands:
        try:
            run(argv, timeout=120)
        except BuildError as exc:
            raise HostError(f"units written to {unit_dir}, but {exc}",
                            "run " + " && ".join(" ".join(c) for c in commands) + " yourself") from None
    outcome.activated = True
    return outcome


def remove(name: str, unit_dir: Path, user: bool = False) -> Outcome:
    """Stop, disable and delete the units NAME.service and NAME.timer that this tool wrote.

    Refuses (and touches nothing) when either file is not one of ours. A build already running
    is left to finish.
    """
    name = check_name(name)
    paths = [p for p in _unit_files(unit_dir, name) if p.exists() or p.is_symlink()]
    if not paths:
        raise InputError(f"no schedule {name!r} in {unit_dir}", "`imagebuilder schedule list` shows them")
    _refuse_foreign(paths, name)
    outcome = Outcome(files=paths, why_not=_why_not_systemctl(unit_dir, user))
    running = not outcome.why_not
    if running:
        try:
            run([*_systemctl(user), "disable", "--now", f"{name}.timer"], timeout=120)
        except BuildError as exc:
            outcome.warnings.append(str(exc))
    wanted = unit_dir / "timers.target.wants" / f"{name}.timer"
    if wanted.is_symlink() and os.path.basename(os.readlink(wanted)) == f"{name}.timer":
        wanted.unlink()            # the enablement of our own timer (what `systemctl disable` removes)
    try:
        for path in paths:
            path.unlink()
    except PermissionError as exc:
        raise HostError(f"cannot delete units in {unit_dir}: {exc.strerror}", "run as root, or pass --user") from None
    reload = [*_systemctl(user), "daemon-reload"]
    if running:
        try:
            run(reload, timeout=120)
            outcome.activated = True
        except BuildError as exc:
            outcome.warnings.append(str(exc))
            outcome.todo = [reload]
    else:
        outcome.todo = [reload]
    return outcome


@dataclass(frozen=True)
class Installed:
    """One schedule found in a unit directory."""

    name: str
    on_calendar: str
    randomized_delay: str
    recipe: str
    enabled: bool
    service: bool          # its NAME.service (ours) is there too
    recipe_exists: bool

    def as_dict(self) -> dict[str, Any]:
        """For `schedule list --json`."""
        return asdict(self)


def installed(unit_dir: Path) -> list[Installed]:
    """The timers this tool wrote in unit_dir, by name; other units are not read past their first line."""
    found = []
    for timer in sorted(unit_dir.glob("*.timer")) if unit_dir.is_dir() else []:
        meta = read_metadata(timer)
        if meta is None:
            continue
        name = timer.name[: -len(".timer")]
        recipe = str(meta.get("recipe", ""))
        found.append(Installed(
            name=name, on_calendar=str(meta.get("on_calendar", "?")),
            randomized_delay=str(meta.get("randomized_delay", "?")), recipe=recipe,
            enabled=(unit_dir / "timers.target.wants" / timer.name).is_symlink(),
            service=read_metadata(unit_dir / f"{name}.service") is not None,
            recipe_exists=bool(recipe) and Path(recipe).is_file()))
    return found
