"""The units `schedule install` writes, checked by systemd itself, and their ExecStart run for real.

systemd is not PID 1 on the machines these tests run on, but its tools work offline:
- `systemd-analyze verify UNIT-FILES` loads the units as the manager would and reports every bad
  setting, and that ExecStart's program is not executable;
- `systemd --test --user` (as an unprivileged user) loads them and dumps what it parsed: the
  command line after unquoting and specifier expansion, the working directory, the timer's calendar.
The command line systemd parsed is then executed, in the working directory systemd parsed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from imagebuilder.schedule import spec, unitfiles
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.integration

GOOD_RECIPE = '[image]\nname = "web"\n[base.bootstrap]\nsuite = "bookworm"\n[[steps]]\nhostname = "web01"\n'
BAD_RECIPE = GOOD_RECIPE + '[disk]\nsise = "8G"\n'
# Everything systemd treats specially in a path: blanks, specifiers, variables, quotes, backslash, `;`.
AWKWARD_DIR = "recipes %n $HOME ${USER} \"q\" 'it' \\b ;"


def _systemd_binary() -> str:
    for path in ("/usr/lib/systemd/systemd", "/lib/systemd/systemd"):
        if os.access(path, os.X_OK):
            return path
    pytest.fail("systemd is not installed (the systemd package provides systemd-analyze too)")


@pytest.fixture
def world():
    """A directory an unprivileged user can read (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="ibtest-schedule-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _install(world: Path, *extra: str) -> tuple[Path, Path, str]:
    """Install a schedule of a good recipe in AWKWARD_DIR; return (recipe, unit dir, unit name)."""
    recipe = world / AWKWARD_DIR / "web.toml"
    recipe.parent.mkdir()
    recipe.write_text(GOOD_RECIPE)
    units = world / "units"
    proc = run_cli("schedule", "install", str(recipe), "--on-calendar", "Mon..Fri *-*-* 03:00",
                   "--name", "ibtest-web", "--unit-dir", str(units), *extra)
    assert proc.returncode == 0, proc.stderr
    for path in [recipe.parent, units, *units.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return recipe, units, "ibtest-web"


def _verify(*files: Path, user: bool = False, runtime: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["systemd-analyze", *(["--user"] if user else []), "verify", "--man=no", *map(str, files)]
    env = {**os.environ, **({"XDG_RUNTIME_DIR": str(runtime)} if runtime else {})}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)


def _problems(proc: subprocess.CompletedProcess[str], name: str) -> list[str]:
    """Lines of verify's output about our units (a host may have noise about its own units)."""
    return [line for line in (proc.stdout + proc.stderr).splitlines() if name in line]


def test_systemd_analyze_verify_accepts_the_units(world):
    _recipe, units, name = _install(world)
    proc = _verify(units / f"{name}.service", units / f"{name}.timer")
    assert proc.returncode == 0 and _problems(proc, name) == [], proc.stdout + proc.stderr


def test_systemd_analyze_verify_accepts_user_units(world):
    _recipe, units, name = _install(world, "--user")
    runtime = world / "runtime"
    runtime.mkdir()
    proc = _verify(units / f"{name}.service", units / f"{name}.timer", user=True, runtime=runtime)
    assert proc.returncode == 0 and _problems(proc, name) == [], proc.stdout + proc.stderr


def test_verify_does_catch_broken_units(world):
    """The check above means something: the same units, broken on purpose, fail it."""
    _recipe, units, name = _install(world)
    service = (units / f"{name}.service").read_text()
    broken = world / "broken"
    broken.mkdir()
    missing = broken / f"{name}.service"
    missing.write_text(service.replace("ExecStart=/", "ExecStart=/nonexistent/"))
    proc = _verify(missing)
    assert proc.returncode != 0 and any("is not executable" in line for line in _problems(proc, name))
    missing.write_text(service.replace("SuccessExitStatus=3", "SuccessExitStatus=three"))
    proc = _verify(missing)
    assert any("Failed to parse" in line for line in _problems(proc, name)), proc.stdout + proc.stderr


def _systemd_dump(units: Path, name: str, runtime: Path) -> dict[str, dict[str, list[str]]]:
    """What `systemd --test --user` parsed from our two units: {unit: {setting: [values]}}."""
    env = {"SYSTEMD_UNIT_PATH": f"{units}:", "XDG_RUNTIME_DIR": str(runtime), "HOME": str(units.parent),
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    argv = [_systemd_binary(), "--test", "--user", f"--unit={name}.timer", "--log-target=console", "--no-pager"]
    if os.geteuid() == 0:   # systemd refuses test mode as root
        os.chown(runtime, 65534, 65534)
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    units_seen: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in proc.stdout.splitlines():
        header = re.match(r"^\t-> Unit (.+):$", line)
        if header:
            current = units_seen.setdefault(header.group(1), {}) if header.group(1).startswith(name) else None
        elif current is not None and ": " in line:
            key, _, value = line.strip().partition(": ")
            current.setdefault(key, []).append(value)
    return units_seen


def _split_dump(line: str) -> list[str]:
    """Split a dumped `Command Line:` as a POSIX shell would: systemd prints each argument that needs
    it in double quotes, with `"`, `\\`, `` ` `` and `$` backslash-escaped (shlex does not unescape `\\$`)."""
    words, word, quoted, escaped, started = [], [], False, False, False
    for char in line:
        if escaped:
            word.append(char if not quoted or char in '"\\`$' else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = started = True
        elif char == '"':
            quoted, started = not quoted, True
        elif char.isspace() and not quoted:
            if started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(char)
            started = True
    assert not quoted and not escaped, f"unbalanced: {line}"
    if started:
        words.append("".join(word))
    return words


def _exec_time_expansion(word: str) -> str:
    """What systemd does to an argument when it executes it: `$$` is `$`, `$X`/`${X}` is the unit's
    environment variable X, and these units set none."""
    return re.sub(r"\$\$|\$\{\w+\}|\$\w+", lambda m: "$" if m.group(0) == "$$" else "", word)


@pytest.fixture
def parsed(world):
    """(recipe, metadata, what systemd parsed) for user units installed in AWKWARD_DIR."""
    recipe, units, name = _install(world, "--user")
    runtime = world / "runtime"
    runtime.mkdir()
    dump = _systemd_dump(units, name, runtime)
    return recipe, unitfiles.read_metadata(units / f"{name}.service"), dump, runtime


def test_systemd_parses_the_units_back_to_what_was_meant(parsed):
    recipe, meta, dump, runtime = parsed
    service, timer = dump["ibtest-web.service"], dump["ibtest-web.timer"]
    assert service["WorkingDirectory"] == [str(recipe.parent)]
    assert service["Type"] == ["oneshot"]
    assert service["StandardOutput"] == ["journal"]
    [command_line] = service["Command Line"]
    argv = [_exec_time_expansion(word) for word in _split_dump(command_line)]
    lock = f"{runtime}/imagebuilder-" + spec.Schedule(
        name="x", recipe=recipe, on_calendar="daily", command=(), flock="").lock_file.split("-", 1)[1]
    assert argv == [shutil.which("flock"), "--close", lock, *meta["command"]]
    assert meta["command"][1:] == ["build", str(recipe), "--if-changed"]
    assert os.path.isabs(meta["command"][0]) and os.access(meta["command"][0], os.X_OK)
    assert timer["OnCalendar"] == ["Mon..Fri *-*-* 03:00:00"]
    assert timer["Persistent"] == ["yes"]
    assert timer["Unit"] == ["ibtest-web.service"]


def test_the_service_command_line_runs_the_real_cli(parsed):
    """Run what systemd would run, where it would run it; a broken recipe proves the wiring (exit 2)."""
    recipe, _meta, dump, _runtime = parsed
    recipe.write_text(BAD_RECIPE)      # edited after install: the next scheduled run must say why it failed
    service = dump["ibtest-web.service"]
    argv = [_exec_time_expansion(word) for word in _split_dump(service["Command Line"][0])]
    proc = subprocess.run(argv, cwd=service["WorkingDirectory"][0], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == spec.EXIT_BAD_INPUT, proc.stderr
    line = BAD_RECIPE.splitlines().index('sise = "8G"') + 1
    assert f"error: {recipe}:{line}: key 'disk.sise': unknown key (did you mean 'size'?)" in proc.stderr.splitlines()
