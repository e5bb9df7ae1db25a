"""`imagebuilder schedule`: systemd timers that rebuild a recipe when its inputs changed."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer

from imagebuilder import recipe
from imagebuilder.cli.common import RecipeArg, echo_table, exit_on_error, warn

app = typer.Typer(help="Scheduled rebuilds: systemd timers that run `build RECIPE --if-changed`.",
                  no_args_is_help=True)
UnitDirOpt = Annotated[Optional[Path], typer.Option(
    help="Where the unit files are (default: /etc/systemd/system, or ~/.config/systemd/user with --user).")]
UserOpt = Annotated[bool, typer.Option("--user", help="Units of the user's systemd (systemctl --user).")]


def _commands_line(commands: list[list[str]]) -> str:
    return " && ".join(shlex.join(argv) for argv in commands)


@app.command("install")
def schedule_install(
    path: RecipeArg,
    on_calendar: Annotated[str, typer.Option(
        help="When to run: a systemd calendar spec (daily, weekly, 'Mon..Fri *-*-* 03:00'; man systemd.time).",
        show_default=False)],
    name: Annotated[Optional[str], typer.Option(
        help="The units' name: NAME.service and NAME.timer (default: imagebuilder-IMAGE).")] = None,
    randomized_delay: Annotated[str, typer.Option(
        help="RandomizedDelaySec: spread runs by up to this long (0 for none).")] = "15min",
    unit_dir: UnitDirOpt = None,
    user: UserOpt = False,
) -> None:
    """Write a systemd service and timer that rebuild the recipe when its inputs changed, and start the timer."""
    from imagebuilder.schedule import unitfiles
    from imagebuilder.schedule.plan import plan as plan_schedule
    with exit_on_error():
        loaded = recipe.load(path)
        plan, next_elapse = plan_schedule(path, loaded.name, on_calendar, name=name,
                                          randomized_delay=randomized_delay, user=user)
        outcome = unitfiles.install(plan, unit_dir or unitfiles.default_unit_dir(user))
    verb = "updated" if outcome.updated else "wrote"
    typer.echo(f"{verb} {' and '.join(str(p) for p in outcome.files)}")
    typer.echo(f"runs: {_commands_line([plan.build_argv])} (OnCalendar={on_calendar}, next {next_elapse}, "
               f"plus up to {randomized_delay})")
    if outcome.activated:
        typer.echo(f"enabled and started {plan.name}.timer; logs: journalctl {'--user ' if user else ''}"
                   f"-u {plan.name}.service")
    else:
        typer.echo(f"{outcome.why_not}, so nothing was started; to start it, run where systemd reads these units:")
        typer.echo(f"  {_commands_line(outcome.todo)}")


@app.command("list")
def schedule_list(
    unit_dir: UnitDirOpt = None, user: UserOpt = False,
    json_output: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """The schedules `schedule install` wrote into the unit directory (other units are ignored)."""
    from imagebuilder.schedule import unitfiles
    found = unitfiles.installed(unit_dir or unitfiles.default_unit_dir(user))
    if json_output:
        typer.echo(json.dumps([entry.as_dict() for entry in found], indent=2))
        return
    table = [("NAME", "ON-CALENDAR", "STATE", "RECIPE")]
    for e in found:
        state = ("enabled" if e.enabled else "disabled") + ("" if e.service else ", no service")
        table.append((e.name, e.on_calendar, state, e.recipe + ("" if e.recipe_exists else " (missing)")))
    echo_table(table)


@app.command("remove")
def schedule_remove(
    name: Annotated[str, typer.Argument(help="The schedule's name (as `schedule list` shows).", show_default=False)],
    unit_dir: UnitDirOpt = None, user: UserOpt = False,
) -> None:
    """Stop, disable and delete a schedule's units; only units `schedule install` wrote."""
    from imagebuilder.schedule import unitfiles
    with exit_on_error():
        outcome = unitfiles.remove(name, unit_dir or unitfiles.default_unit_dir(user), user)
    for warning in outcome.warnings:
        warn(warning)
    typer.echo(f"removed {' and '.join(str(p) for p in outcome.files)}")
    if outcome.todo:
        typer.echo(f"{outcome.why_not or 'systemctl failed'}; then run: {_commands_line(outcome.todo)}")
