"""Unit files on disk: where systemd reads them, and install, list and remove of the files this tool
wrote (never another's), with systemctl when systemd runs here and reads that directory."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imagebuilder.errors import HostError, InputError
from imagebuilder.run import CommandError, run
from imagebuilder.schedule.plan import check_name
from imagebuilder.schedule.spec import MARKER, META_PREFIX, Schedule

SYSTEM_UNIT_DIR = Path("/etc/systemd/system")


def default_unit_dir(user: bool) -> Path:
    """/etc/systemd/system, or with `user` the directory the user's systemd reads ($XDG_CONFIG_HOME)."""
    if not user:
        return SYSTEM_UNIT_DIR
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


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
        except CommandError as exc:
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
        except CommandError as exc:
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
        except CommandError as exc:
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
