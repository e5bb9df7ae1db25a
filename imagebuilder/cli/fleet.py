"""A recipe's [[machines]] or [fleet]: up, down and destroy; and clone, ad hoc clones of a volume."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer

from imagebuilder import recipe
from imagebuilder.cli.common import AccelOpt, ConnectOpt, RecipeArg, duration, exit_on_error, fail, on_sigterm
from imagebuilder.errors import InputError
from imagebuilder.progress import Reporter


def _fleet_run(action, json_output: bool = False):  # noqa: ANN001, ANN202 - a callback runner
    """Run action(); errors become exit codes, Ctrl-C exits 130."""
    signal.signal(signal.SIGTERM, on_sigterm)
    with exit_on_error(json_output):
        return action()


def up(
    path: RecipeArg,
    accel: AccelOpt = None,
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Cache directory, for building the golden image.", envvar="IMAGEBUILDER_CACHE_DIR")] = None,
    parallel: Annotated[int, typer.Option(help="Boot at most this many machines at once (0: all).")] = 0,
    wait: Annotated[bool, typer.Option(help="Wait until each started machine is ready ([domain] wait).")] = True,
    json_output: Annotated[bool, typer.Option("--json", help="A JSON summary on stdout.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every host command.")] = False,
) -> None:
    """Make the recipe's machines exist and run: build the golden image if missing, create missing machines
    (thin overlays), start stopped ones, leave the others alone and report drift from the recipe."""
    from imagebuilder.fleet import up as fleet_up
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(name)s: %(message)s")
    if parallel < 0:
        raise fail(InputError("--parallel must be 0 or more"), json_output)
    options = fleet_up.FleetOptions(accel=accel, cache_dir=cache_dir, parallel=parallel, wait=wait)
    result = _fleet_run(lambda: fleet_up.up(recipe.load(path), options, Reporter("json" if json_output else None)),
                        json_output)
    if json_output:
        print(json.dumps({"event": "result", **result.as_dict()}))
        return
    for name, problems in result.drift.items():
        typer.echo(f"{name}: differs from the recipe: {'; '.join(problems)}")
    replaced = [name for name in result.seeds if name not in result.created]
    parts = [f"created {', '.join(result.created)}" if result.created else "",
             f"started {', '.join(result.started)}" if result.started else "",
             f"new cloud-init seed for {', '.join(replaced)}" if replaced else "",
             f"unchanged {', '.join(result.unchanged)}" if result.unchanged else "",
             f"drift in {', '.join(result.drift)} (left as it is)" if result.drift else ""]
    typer.echo("; ".join(p for p in parts if p))


def down(
    path: RecipeArg,
    timeout: Annotated[str, typer.Option(help="How long the machines may take to shut down.")] = "2m",
    force: Annotated[bool, typer.Option(help="Kill machines that have not shut down in time.")] = False,
) -> None:
    """Shut the recipe's running machines down (guest agent, else ACPI) and wait until they are off."""
    from imagebuilder.fleet import down as fleet_down
    seconds = duration(timeout, "--timeout")
    stopped = _fleet_run(lambda: fleet_down.down(recipe.load(path), seconds, force, Reporter()))
    typer.echo(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


def destroy(
    path: RecipeArg,
    keep_golden: Annotated[bool, typer.Option(help="Keep the golden volume (remove only the machines).")] = False,
) -> None:
    """Remove the recipe's machines with the overlays, seeds and data disks made for them, then the golden
    volume, which is refused (exit 1) while any clone still uses it as backing store."""
    from imagebuilder.fleet import destroy as fleet_destroy
    removed = _fleet_run(lambda: fleet_destroy.destroy(recipe.load(path), keep_golden, Reporter()))
    typer.echo(f"removed {', '.join(removed)}" if removed else "nothing to remove")


def clone_command(
    volume: Annotated[str, typer.Argument(help="The golden volume to clone (never modified).", show_default=False)],
    name: Annotated[str, typer.Argument(
        help="The clone's name: its volume is NAME.qcow2 and its host name NAME; with --count, NAME-1 … "
             "(or {n} in NAME is replaced).", show_default=False)],
    count: Annotated[int, typer.Option(help="How many clones.")] = 1,
    pool: Annotated[str, typer.Option(help="The pool of VOLUME; the clones go there too.")] = "default",
    connect: ConnectOpt = None,
    customize: Annotated[Optional[list[str]], typer.Option(
        help="A virt-customize command for every clone, as in a commands file ('write /etc/motd:hi', "
             "'run-command …'); {name} is the clone's name. Repeatable.")] = None,
    accel: AccelOpt = None,
) -> None:
    """Thin clones of a golden volume: qcow2 overlays whose backing store it is, each with its own
    machine-id, SSH host keys (made at first boot) and host name, customized offline in one appliance."""
    from imagebuilder.fleet import clone as fleet_clone
    made = _fleet_run(lambda: fleet_clone.clone(connect, pool, volume, name, count, customize or [], accel, Reporter()))
    typer.echo(f"cloned {volume}: {', '.join(made)}")
