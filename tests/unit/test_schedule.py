"""The systemd units `schedule install` writes: escaping, the exit-status mapping, metadata, names."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from imagebuilder import __version__
from imagebuilder.schedule import plan, spec, unitfiles
from imagebuilder.errors import InputError
from imagebuilder.schedule.spec import Schedule


def make(recipe: str = "/srv/recipes/web.toml", **overrides) -> Schedule:
    values = {"name": "imagebuilder-web", "recipe": Path(recipe), "on_calendar": "daily",
              "command": ("/opt/ib/.venv/bin/imagebuilder",), "flock": "/usr/bin/flock"}
    values.update(overrides)
    return Schedule(**values)


def settings(text: str) -> dict[str, list[str]]:
    """KEY -> values of a unit file's settings (comments and sections left out)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize(("word", "quoted"), [
    ("/usr/bin/flock", "/usr/bin/flock"),
    ("--if-changed", "--if-changed"),
    ("/srv/100%/web.toml", "/srv/100%%/web.toml"),
    ("/srv/my recipes/web.toml", '"/srv/my recipes/web.toml"'),
    ("/srv/a b/%n.toml", '"/srv/a b/%%n.toml"'),
    ("/srv/$HOME/x", '"/srv/$$HOME/x"'),
    ('/srv/"q"\\b', '"/srv/\\"q\\"\\\\b"'),
    ("/srv/line\nbreak\tand\x01", '"/srv/line\\nbreak\\tand\\x01"'),
    (";", '";"'),
    ("it's", '"it\'s"'),
    ("", '""'),
])
def test_exec_words_are_quoted_and_escaped_for_systemd(word, quoted):
    assert spec.quote_exec_word(word) == quoted


def test_escape_specifiers_doubles_percent():
    assert spec.escape_specifiers("/srv/%n/%%") == "/srv/%%n/%%%%"


def test_service_runs_build_if_changed_under_a_lock_and_logs_to_the_journal():
    unit = settings(make().service_text())
    assert unit["Type"] == ["oneshot"]
    assert unit["ExecStart"] == [f"/usr/bin/flock --close {make().lock_file} "
                                 "/opt/ib/.venv/bin/imagebuilder build /srv/recipes/web.toml --if-changed"]
    assert unit["WorkingDirectory"] == ["/srv/recipes"]
    assert unit["StandardOutput"] == ["journal"]
    assert unit["StandardError"] == ["journal"]
    assert unit["After"] == ["network-online.target libvirtd.service virtqemud.service"]


def test_lock_is_per_recipe_in_the_runtime_directory():
    one, same, other = make(), make(name="nightly"), make("/srv/recipes/db.toml")
    assert one.lock_file.startswith("%t/imagebuilder-") and one.lock_file.endswith(".lock")
    assert one.lock_file == same.lock_file
    assert one.lock_file != other.lock_file


def test_exit_status_mapping_built_and_no_change_succeed_failures_do_not():
    unit = settings(make().service_text())
    success = {int(code) for value in unit["SuccessExitStatus"] for code in value.split()}
    assert success == {spec.EXIT_BUILT} == {3}
    assert spec.EXIT_NO_CHANGE == 0      # systemd's own success
    assert spec.EXIT_FAILED not in success and spec.EXIT_BAD_INPUT not in success


def test_paths_with_spaces_and_percent_are_escaped_everywhere():
    item = make("/srv/my recipes %n/$web.toml")
    service = settings(item.service_text())
    assert service["WorkingDirectory"] == ["/srv/my recipes %%n"]
    assert service["ExecStart"][0].endswith(' build "/srv/my recipes %%n/$$web.toml" --if-changed')
    assert service["Description"] == ["imagebuilder: rebuild /srv/my recipes %%n/$web.toml if its inputs changed"]
    timer = settings(item.timer_text())
    assert timer["Description"] == ["imagebuilder: scheduled rebuild of /srv/my recipes %%n/$web.toml"]


def test_a_venv_interpreter_command_is_quoted_word_by_word():
    item = make(command=("/home/me/my venv/bin/python", "-m", "imagebuilder.cli"))
    assert settings(item.service_text())["ExecStart"][0].split(" build ")[0].endswith(
        ' "/home/me/my venv/bin/python" -m imagebuilder.cli')


def test_timer_is_persistent_randomized_and_enabled_by_timers_target():
    timer = settings(make(on_calendar="Mon..Fri *-*-* 03:00", randomized_delay="1h").timer_text())
    assert timer["OnCalendar"] == ["Mon..Fri *-*-* 03:00"]
    assert timer["Persistent"] == ["true"]
    assert timer["RandomizedDelaySec"] == ["1h"]
    assert timer["Unit"] == ["imagebuilder-web.service"]
    assert timer["WantedBy"] == ["timers.target"]


def test_user_units_do_not_order_after_system_targets():
    unit = settings(make(user=True).service_text())
    assert "Wants" not in unit and "After" not in unit


def test_both_units_start_with_the_marker_and_metadata(tmp_path):
    item = make("/srv/a b/%n.toml", on_calendar="weekly")
    for text in (item.service_text(), item.timer_text()):
        path = tmp_path / "unit"
        path.write_text(text)
        assert text.splitlines()[0] == spec.MARKER
        assert unitfiles.read_metadata(path) == item.metadata()
    assert item.metadata()["command"] == ["/opt/ib/.venv/bin/imagebuilder", "build", "/srv/a b/%n.toml",
                                          "--if-changed"]


def test_metadata_is_none_for_units_someone_else_wrote(tmp_path):
    foreign = tmp_path / "backup.timer"
    foreign.write_text("[Timer]\nOnCalendar=daily\n")
    assert unitfiles.read_metadata(foreign) is None
    assert unitfiles.read_metadata(tmp_path / "missing.timer") is None
    almost = tmp_path / "almost.timer"
    almost.write_text(spec.MARKER + "\n# imagebuilder-schedule: {not json\n")
    assert unitfiles.read_metadata(almost) is None


@pytest.mark.parametrize(("given", "name"), [("nightly", "nightly"), ("nightly.timer", "nightly"),
                                             ("web.service", "web"), ("a_b.c:d-1", "a_b.c:d-1")])
def test_names(given, name):
    assert plan.check_name(given) == name


@pytest.mark.parametrize("bad", ["", "a b", "../x", "-x", "x@y", "a/b", "x" * 201])
def test_bad_names_are_refused(bad):
    with pytest.raises(InputError):
        plan.check_name(bad)


def test_default_name_maps_characters_units_cannot_have():
    assert plan.default_name("web+1") == "imagebuilder-web-1"
    assert plan.default_name("db.prod") == "imagebuilder-db.prod"


@pytest.mark.parametrize("bad", ["/srv/line\nbreak/web.toml", "/srv/trailing /x ", "/srv/x\\"])
def test_values_a_unit_cannot_hold_are_refused(bad):
    with pytest.raises(InputError):
        spec.check_unit_value("recipe path", bad)


def test_default_unit_dirs(monkeypatch, tmp_path):
    assert unitfiles.default_unit_dir(False) == Path("/etc/systemd/system")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert unitfiles.default_unit_dir(True) == tmp_path / "systemd" / "user"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert unitfiles.default_unit_dir(True) == tmp_path / ".config" / "systemd" / "user"


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_command_is_the_script_this_process_runs_as_made_absolute(monkeypatch, tmp_path):
    _executable(tmp_path / "bin" / "imagebuilder")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bin/imagebuilder", "schedule", "install"])
    assert plan.imagebuilder_command() == (str(tmp_path / "bin" / "imagebuilder"),)


def test_command_is_the_script_beside_the_venv_python_without_resolving_it(monkeypatch, tmp_path):
    venv_bin = tmp_path / "venv" / "bin"
    script = _executable(venv_bin / "imagebuilder")
    os.symlink("/usr/bin/python3", venv_bin / "python")
    monkeypatch.setattr(sys, "argv", ["/usr/bin/pytest"])
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    assert plan.imagebuilder_command() == (str(script),)


def test_command_falls_back_to_python_dash_m(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/pytest"])
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert plan.imagebuilder_command() == (str(tmp_path / "venv" / "bin" / "python"), "-m", "imagebuilder.cli")


def test_the_python_dash_m_fallback_runs():
    proc = subprocess.run([sys.executable, "-m", "imagebuilder.cli", "version"], capture_output=True, text=True,
                          check=False, stdin=subprocess.DEVNULL)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"{__version__}\n", "")
