"""`imagebuilder vm`: domains in plain words (list, start, stop, kill, remove, console)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from imagebuilder import recipe
from imagebuilder.cli.common import ConnectOpt, duration, echo_table, exit_on_error, fail
from imagebuilder.errors import InputError

app = typer.Typer(help="Domains in plain words: list, start, stop (ACPI), kill (hard), remove, console.",
                  no_args_is_help=True)
NameArg = Annotated[str, typer.Argument(help="The domain's name.", show_default=False)]


def _vm(uri: Optional[str], action, json_mode: bool = False):  # noqa: ANN001, ANN202 - a callback runner
    """Run action(conn) on a libvirt connection; errors become exit codes, Ctrl-C exits 130."""
    from imagebuilder.virt.connection import connect
    with exit_on_error(json_mode), connect(uri) as conn:
        return action(conn)


@app.command("list")
def vm_list(connect: ConnectOpt = None,
            json_output: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False) -> None:
    """Every domain, running or not: state, memory, vCPUs, OS and the recipe it was built from."""
    from imagebuilder.virt import domain
    rows = _vm(connect, domain.list_domains, json_output)
    if json_output:
        typer.echo(json.dumps([row.as_dict() for row in rows], indent=2))
        return
    table = [("NAME", "STATE", "MEMORY", "VCPUS", "OS", "RECIPE")]
    table += [(r.name, r.state, f"{r.memory / 2**20:.0f} MiB", str(r.vcpus),
               (r.osinfo or "-").split("://", 1)[-1], r.recipe or "-") for r in rows]
    echo_table(table)


@app.command("start")
def vm_start(
    name: NameArg, connect: ConnectOpt = None,
    wait: Annotated[str, typer.Option(help="Then wait for: agent, ssh, serial:TEXT or none.")] = "none",
    timeout: Annotated[str, typer.Option(help="How long to wait, e.g. 300s or 10m.")] = "10m",
) -> None:
    """Start (boot) a defined domain, and optionally wait until it is ready."""
    from imagebuilder.deploy import watchdog
    from imagebuilder.virt import connection, domain, wait as waiting
    try:
        kind, text = recipe.parse_wait(wait)
    except ValueError as exc:
        raise fail(InputError(f"--wait: {exc}"), False) from None
    seconds = duration(timeout, "--timeout")

    def action(conn) -> str:  # noqa: ANN001
        dom = domain.lookup(conn, name)
        if dom.isActive():
            message = f"{name} is already running"
        elif kind == "none":
            domain.start(dom)
            message = f"started {name}"
        else:
            dom, accel = watchdog.start(conn, dom, lambda line: typer.echo(line, err=True))
            message = f"started {name} ({accel})"
        if kind != "none":
            log = domain.serial_log_of(dom) if connection.is_local(conn) else None
            message += f"; {waiting.wait_ready(conn, dom, kind, text, seconds, log)}"
        return message

    typer.echo(_vm(connect, action))


@app.command("stop")
def vm_stop(
    name: NameArg, connect: ConnectOpt = None,
    timeout: Annotated[str, typer.Option(help="How long the guest may take to shut down.")] = "2m",
    force: Annotated[bool, typer.Option(help="Kill it if it has not shut down in time.")] = False,
    method: Annotated[str, typer.Option(
        help="acpi: press the power button; agent: ask the guest agent; any: the agent when it answers, "
             "else ACPI.")] = "acpi",
) -> None:
    """Shut a domain down cleanly (ACPI power button by default) and wait until it is off."""
    from imagebuilder.errors import VirtError
    from imagebuilder.virt import domain
    seconds = duration(timeout, "--timeout")

    def action(conn) -> str:  # noqa: ANN001
        if method not in domain.STOP_METHODS:
            raise InputError(f"--method {method!r} is not one of {', '.join(domain.STOP_METHODS)}")
        dom = domain.lookup(conn, name)
        try:
            return f"stopped {name}" if domain.stop(dom, seconds, method=method) else f"{name} is not running"
        except VirtError:
            if not force:
                raise
            domain.kill(dom)
            return f"killed {name}: it did not shut down within {seconds}s"

    typer.echo(_vm(connect, action))


@app.command("kill")
def vm_kill(name: NameArg, connect: ConnectOpt = None) -> None:
    """Stop a domain at once, like pulling the power cord (libvirt's destroy)."""
    from imagebuilder.virt import domain
    typer.echo(_vm(connect, lambda conn: f"killed {name}" if domain.kill(domain.lookup(conn, name))
                   else f"{name} is not running"))


@app.command("remove")
def vm_remove(
    name: NameArg, connect: ConnectOpt = None,
    volumes: Annotated[bool, typer.Option(help="Also delete the storage volumes of its disks.")] = False,
    force: Annotated[bool, typer.Option(help="Kill it first if it is running.")] = False,
) -> None:
    """Remove a domain's definition (libvirt's undefine), with its NVRAM; --volumes deletes its disks."""
    from imagebuilder.virt import domain

    def action(conn) -> str:  # noqa: ANN001
        dom = domain.lookup(conn, name)
        if dom.isActive() and not force:
            raise InputError(f"{name} is running; stop it first (`imagebuilder vm stop {name}`) or use --force")
        doomed = domain.volumes_of(conn, dom) if volumes else []
        domain.kill(dom)
        domain.undefine(dom)
        deleted = domain.delete_volumes(doomed)
        return f"removed {name}" + (f" and its volumes {', '.join(deleted)}" if deleted else "")

    typer.echo(_vm(connect, action))


@app.command("console")
def vm_console(
    name: NameArg, connect: ConnectOpt = None,
    force: Annotated[bool, typer.Option(help="Take the console over from another client.")] = False,
) -> None:
    """Attach to a domain's serial console; Ctrl-] leaves."""
    from imagebuilder.virt import console, domain

    def action(conn) -> str:  # noqa: ANN001
        dom = domain.lookup(conn, name)
        typer.echo(f"Connected to the console of {name}; press Ctrl-] to leave.", err=True)
        return console.attach(conn, dom, sys.stdin.fileno(), sys.stdout.fileno(), force=force)

    reason = _vm(connect, action)
    typer.echo(f"\nconsole: {reason}", err=True)
