"""`imagebuilder schedule install|list|remove` through the real command line, with units in tmp_path.

The calendar check runs the real `systemd-analyze calendar`; systemctl is never run: where a test
needs "systemd is running", it records the systemctl command lines instead.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from imagebuilder.schedule import unitfiles
from imagebuilder.cli import app
from imagebuilder.run import CommandError
from imagebuilder.run import run as real_run

runner = CliRunner()
RECIPE = '[image]\nname = "web"\n[base.bootstrap]\n[[steps]]\nhostname = "web01"\n'


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "my recipes" / "web.toml"
    path.parent.mkdir()
    path.write_text(RECIPE)
    return path


@pytest.fixture
def units(tmp_path):
    return tmp_path / "units"


@pytest.fixture(autouse=True)
def no_systemd(monkeypatch):
    """Behave as on this machine, where systemd is not PID 1, whatever the host running the tests."""
    monkeypatch.setattr(unitfiles, "systemd_running", lambda: False)


@pytest.fixture
def systemctl_calls(monkeypatch, units):
    """Pretend systemd runs and reads `units`; record the systemctl command lines, run everything else."""
    calls = []

    def fake_run(argv, **kwargs):
        if argv[0] == "systemctl":
            calls.append(list(argv))
            return None
        return real_run(argv, **kwargs)

    monkeypatch.setattr(unitfiles, "systemd_running", lambda: True)
    monkeypatch.setattr(unitfiles, "default_unit_dir", lambda user: units)
    monkeypatch.setattr(unitfiles, "run", fake_run)
    return calls


def install(recipe, units, *extra):
    return runner.invoke(app, ["schedule", "install", str(recipe), "--on-calendar", "daily",
                               "--unit-dir", str(units), *extra])


def test_install_writes_service_and_timer_and_says_what_to_run(recipe, units):
    result = install(recipe, units)
    assert result.exit_code == 0, result.output
    service = (units / "imagebuilder-web.service").read_text()
    timer = (units / "imagebuilder-web.timer").read_text()
    assert f' build "{recipe}" --if-changed\n' in service
    assert f"WorkingDirectory={recipe.parent}\n" in service
    assert "SuccessExitStatus=3\n" in service
    assert "OnCalendar=daily\n" in timer and "Persistent=true\n" in timer
    assert "systemd is not running here" in result.output
    assert "systemctl daemon-reload && systemctl enable --now imagebuilder-web.timer" in result.output
    assert "next " in result.output


def test_install_with_a_relative_recipe_path_writes_absolute_paths(recipe, units, monkeypatch):
    monkeypatch.chdir(recipe.parent.parent)
    result = install("my recipes/web.toml", units)
    assert result.exit_code == 0, result.output
    meta = unitfiles.read_metadata(units / "imagebuilder-web.service")
    assert meta["recipe"] == str(recipe)
    assert meta["command"][0].startswith("/")


def test_install_name_option(recipe, units):
    result = install(recipe, units, "--name", "nightly-web.timer", "--randomized-delay", "0")
    assert result.exit_code == 0, result.output
    assert "RandomizedDelaySec=0\n" in (units / "nightly-web.timer").read_text()
    assert (units / "nightly-web.service").is_file()


def test_bad_calendar_is_one_line_exit_2_and_writes_nothing(recipe, units):
    result = runner.invoke(app, ["schedule", "install", str(recipe), "--on-calendar", "every tuesday",
                                 "--unit-dir", str(units)])
    assert result.exit_code == 2
    assert result.output.startswith("error: --on-calendar 'every tuesday': not a systemd calendar specification")
    assert len(result.output.strip().splitlines()) == 1
    assert not units.exists()


def test_bad_randomized_delay_is_exit_2(recipe, units):
    result = install(recipe, units, "--randomized-delay", "soon")
    assert result.exit_code == 2
    assert "error: --randomized-delay 'soon': not a systemd time span" in result.output


def test_bad_recipe_is_exit_2_with_file_line_key_and_writes_nothing(tmp_path, units):
    bad = tmp_path / "bad.toml"
    bad.write_text('[image]\nname = "x"\n[base.bootstrap]\nsuite = "bookworm"\n[disk]\nsise = "8G"\n')
    result = install(bad, units)
    assert result.exit_code == 2
    assert f"{bad}:6: key 'disk.sise': unknown key (did you mean 'size'?)" in result.output
    assert not units.exists()


def test_install_refuses_to_overwrite_a_unit_it_did_not_write(recipe, units):
    units.mkdir()
    foreign = units / "imagebuilder-web.timer"
    foreign.write_text("[Timer]\nOnCalendar=hourly\n")
    result = install(recipe, units)
    assert result.exit_code == 2
    assert "was not written by imagebuilder" in result.output
    assert foreign.read_text() == "[Timer]\nOnCalendar=hourly\n"
    assert not (units / "imagebuilder-web.service").exists()


def test_reinstall_updates_its_own_units(recipe, units):
    assert install(recipe, units).exit_code == 0
    result = runner.invoke(app, ["schedule", "install", str(recipe), "--on-calendar", "weekly",
                                 "--unit-dir", str(units)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("updated ")
    assert "OnCalendar=weekly\n" in (units / "imagebuilder-web.timer").read_text()


def test_list_shows_only_its_own_timers(recipe, units):
    assert install(recipe, units).exit_code == 0
    (units / "backup.timer").write_text("[Timer]\nOnCalendar=hourly\n")
    (units / "timers.target.wants").mkdir()
    (units / "timers.target.wants" / "imagebuilder-web.timer").symlink_to(units / "imagebuilder-web.timer")
    result = runner.invoke(app, ["schedule", "list", "--unit-dir", str(units)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "ON-CALENDAR", "STATE", "RECIPE"]
    assert len(lines) == 2 and lines[1].split()[:3] == ["imagebuilder-web", "daily", "enabled"]
    assert "backup" not in result.output
    listed = json.loads(runner.invoke(app, ["schedule", "list", "--unit-dir", str(units), "--json"]).output)
    assert listed == [{"name": "imagebuilder-web", "on_calendar": "daily", "randomized_delay": "15min",
                       "recipe": str(recipe), "enabled": True, "service": True, "recipe_exists": True}]


def test_list_of_a_missing_directory_is_empty(tmp_path):
    result = runner.invoke(app, ["schedule", "list", "--unit-dir", str(tmp_path / "none"), "--json"])
    assert result.exit_code == 0 and json.loads(result.output) == []


def test_remove_deletes_its_units_and_their_enablement(recipe, units):
    assert install(recipe, units).exit_code == 0
    wants = units / "timers.target.wants"
    wants.mkdir()
    (wants / "imagebuilder-web.timer").symlink_to(units / "imagebuilder-web.timer")
    (units / "backup.timer").write_text("[Timer]\nOnCalendar=hourly\n")
    result = runner.invoke(app, ["schedule", "remove", "imagebuilder-web", "--unit-dir", str(units)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in units.iterdir()) == ["backup.timer", "timers.target.wants"]
    assert list(wants.iterdir()) == []
    assert "systemctl daemon-reload" in result.output


def test_remove_refuses_units_it_did_not_write(units):
    units.mkdir()
    (units / "backup.timer").write_text("[Timer]\nOnCalendar=hourly\n")
    (units / "backup.service").write_text("[Service]\nExecStart=/bin/true\n")
    result = runner.invoke(app, ["schedule", "remove", "backup", "--unit-dir", str(units)])
    assert result.exit_code == 2
    assert "was not written by imagebuilder" in result.output
    assert (units / "backup.timer").exists() and (units / "backup.service").exists()


def test_remove_of_an_unknown_schedule_is_exit_2(units):
    result = runner.invoke(app, ["schedule", "remove", "nothing", "--unit-dir", str(units)])
    assert result.exit_code == 2
    assert "no schedule 'nothing'" in result.output


def test_where_systemd_runs_install_enables_the_timer(recipe, units, systemctl_calls):
    result = install(recipe, units)
    assert result.exit_code == 0, result.output
    assert systemctl_calls == [["systemctl", "daemon-reload"],
                               ["systemctl", "enable", "--now", "imagebuilder-web.timer"]]
    assert "enabled and started imagebuilder-web.timer" in result.output


def test_where_systemd_runs_user_units_use_systemctl_user(recipe, units, systemctl_calls):
    assert install(recipe, units, "--user").exit_code == 0
    assert systemctl_calls == [["systemctl", "--user", "daemon-reload"],
                               ["systemctl", "--user", "enable", "--now", "imagebuilder-web.timer"]]
    assert "%t/imagebuilder-" in (units / "imagebuilder-web.service").read_text()


def test_where_systemd_runs_remove_disables_then_reloads(recipe, units, systemctl_calls):
    assert install(recipe, units).exit_code == 0
    systemctl_calls.clear()
    result = runner.invoke(app, ["schedule", "remove", "imagebuilder-web.timer", "--unit-dir", str(units)])
    assert result.exit_code == 0, result.output
    assert systemctl_calls == [["systemctl", "disable", "--now", "imagebuilder-web.timer"],
                               ["systemctl", "daemon-reload"]]
    assert not any(units.iterdir())


def test_where_systemctl_fails_install_says_what_to_run(recipe, units, systemctl_calls, monkeypatch):
    def failing(argv, **kwargs):
        if argv[0] == "systemctl":
            raise CommandError(argv, 1, "Failed to enable unit: Access denied")
        return real_run(argv, **kwargs)

    monkeypatch.setattr(unitfiles, "run", failing)
    result = install(recipe, units)
    assert result.exit_code == 1
    assert "but systemctl daemon-reload failed with exit code 1; Failed to enable unit: Access denied" in result.output
    assert "run systemctl daemon-reload && systemctl enable --now imagebuilder-web.timer yourself" in result.output


def test_where_systemd_runs_units_in_another_directory_are_not_activated(recipe, tmp_path, systemctl_calls):
    elsewhere = tmp_path / "elsewhere"
    result = install(recipe, elsewhere)
    assert result.exit_code == 0, result.output
    assert systemctl_calls == []
    assert f"systemd does not read units from {elsewhere} by default" in result.output
    assert "systemctl daemon-reload && systemctl enable --now imagebuilder-web.timer" in result.output
    removed = runner.invoke(app, ["schedule", "remove", "imagebuilder-web", "--unit-dir", str(elsewhere)])
    assert removed.exit_code == 0 and systemctl_calls == []


def test_user_default_unit_dir(recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    result = runner.invoke(app, ["schedule", "install", str(recipe), "--on-calendar", "daily", "--user"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "config" / "systemd" / "user" / "imagebuilder-web.timer").is_file()
    listed = runner.invoke(app, ["schedule", "list", "--user"])
    assert "imagebuilder-web" in listed.output
