"""Planning a schedule: its unit name, the imagebuilder command systemd runs, the calendar and delay
checked by systemd-analyze, and the lock program."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from imagebuilder.errors import HostError, InputError
from imagebuilder.run import CommandError, run
from imagebuilder.schedule.spec import DEFAULT_RANDOMIZED_DELAY, Schedule, check_unit_value

_UNIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")


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
    check_unit_value("--on-calendar", spec)
    if not spec:
        raise InputError("--on-calendar is empty", "for example daily, weekly or 'Mon..Fri *-*-* 03:00'")
    try:
        proc = run([_systemd_analyze(), "calendar", spec], timeout=30)
    except CommandError:
        raise InputError(f"--on-calendar {spec!r}: not a systemd calendar specification",
                         "see `man systemd.time`; for example daily, weekly or 'Mon..Fri *-*-* 03:00'") from None
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Next elapse":
            return value.strip()
    return "never"


def check_timespan(text: str) -> str:
    """Check a RandomizedDelaySec value (such as 15min, 1h, 0) with `systemd-analyze timespan`."""
    check_unit_value("--randomized-delay", text)
    try:
        run([_systemd_analyze(), "timespan", text], timeout=30)
    except CommandError:
        raise InputError(f"--randomized-delay {text!r}: not a systemd time span",
                         "for example 0, 90s, 15min or 1h") from None
    return text


def plan(recipe_file: Path, image_name: str, on_calendar: str, *, name: str | None = None,
         randomized_delay: str = DEFAULT_RANDOMIZED_DELAY, user: bool = False) -> tuple[Schedule, str]:
    """The schedule for a recipe that has already been loaded (validated), and when it next runs."""
    recipe_path = Path(os.path.abspath(recipe_file))
    check_unit_value("recipe path", str(recipe_path))
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
