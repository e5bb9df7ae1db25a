"""The command line: thin; parses options, calls the pipeline, renders results and exit codes."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from imagebuilder import __version__, recipe
from imagebuilder.errors import EXIT_BUILT, ImageBuilderError, InputError, Interrupted
from imagebuilder.progress import Reporter

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Build customized VM images from TOML recipes and boot them under libvirt.")

RecipeArg = Annotated[Path, typer.Argument(help="The recipe file (TOML).", show_default=False)]
StrictPathsOpt = Annotated[bool, typer.Option(
    "--strict-paths", help="Refuse host paths (absolute, '..', symlinks, file:// URLs) that lead outside the "
                           "recipe's directory.", envvar="IMAGEBUILDER_STRICT_PATHS")]
NoInlineSecretsOpt = Annotated[bool, typer.Option(
    "--no-inline-secrets", help="Refuse passwords written in the recipe or its commands files "
                                "(password:TEXT); use file:PATH or env:VAR.", envvar="IMAGEBUILDER_NO_INLINE_SECRETS")]


def _fail(exc: ImageBuilderError, json_mode: bool) -> typer.Exit:
    if json_mode:
        print(json.dumps({"event": "error", "type": type(exc).__name__, "message": str(exc),
                          "exit_code": exc.exit_code}))
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(exc.exit_code)


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise Interrupted("stopped by SIGTERM")


@app.command()
def validate(path: RecipeArg, strict_paths: StrictPathsOpt = False, no_inline_secrets: NoInlineSecretsOpt = False,
             ) -> None:
    """Check a recipe (syntax, types, keys, host files) without building anything."""
    try:
        loaded = recipe.load(path, strict_paths=strict_paths, inline_secrets=not no_inline_secrets)
    except ImageBuilderError as exc:
        raise _fail(exc, False) from None
    typer.echo(f"{path}: OK ({len(loaded.steps)} steps, base from {loaded.base.kind})")


@app.command()
def build(
    path: RecipeArg,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the image to this file only; libvirt is not touched.")] = None,
    accel: Annotated[Optional[str], typer.Option(
        help="Accelerator: auto (KVM if a probe boots, else TCG), kvm or tcg.",
        envvar="IMAGEBUILDER_ACCEL")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing output file, volume or domain.")] = False,
    keep_on_failure: Annotated[bool, typer.Option(
        help="Keep the volume, domain and network this run created when it fails.")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Cache directory (default: $XDG_CACHE_HOME/imagebuilder).", envvar="IMAGEBUILDER_CACHE_DIR")] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="Where to write the manifest.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable JSON lines on stdout.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every host command.")] = False,
    run_tests: Annotated[bool, typer.Option("--test", help="Then run the recipe's [[tests]] (like `test`).")] = False,
    strict_paths: StrictPathsOpt = False,
    no_inline_secrets: NoInlineSecretsOpt = False,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Ignore cached stage results and earlier outputs; build everything.")] = False,
    if_changed: Annotated[bool, typer.Option(
        "--if-changed", help="For scheduled runs: exit 0 ('no change') when the outputs are up to date, "
                             "3 after building something new.")] = False,
) -> None:
    """Build the image a recipe describes, publish it, and define and boot its domain."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(name)s: %(message)s")
    reporter = Reporter("json" if json_output else None)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        loaded = recipe.load(path, strict_paths=strict_paths, inline_secrets=not no_inline_secrets)
        from imagebuilder.pipeline import BuildOptions, build as run_build
        options = BuildOptions(accel=accel, cache_dir=cache_dir, force=force, output_file=output,
                               keep_on_failure=keep_on_failure, manifest_path=manifest, no_cache=no_cache)
        result = run_build(loaded, options, reporter)
    except KeyboardInterrupt:
        raise _fail(Interrupted("interrupted"), json_output) from None
    except ImageBuilderError as exc:
        raise _fail(exc, json_output) from None
    if json_output:
        print(json.dumps({"event": "result", "manifest": str(result.manifest_path), "outputs": result.outputs,
                          "up_to_date": result.up_to_date}))
    elif result.up_to_date:
        typer.echo("no change" if if_changed else f"{loaded.name} is up to date")
    else:
        typer.echo(f"built {loaded.name} in {sum(result.manifest['timings'].values()):.0f}s")
    if loaded.machines and not json_output:
        typer.echo(f"the golden image of {len(loaded.machines)} machines: `imagebuilder up {path}` makes them")
    if run_tests:
        _test(loaded, output, None, None, accel, json_output)
    if if_changed and not result.up_to_date:
        raise typer.Exit(EXIT_BUILT)


def _test(loaded, image: Optional[Path], junit: Optional[Path], summary: Optional[Path], accel: Optional[str],
          json_output: bool) -> None:
    """Run the recipe's [[tests]] and write the reports; exit 1 when a check fails."""
    from imagebuilder import accel as accelerator, tester
    reporter = Reporter("json" if json_output else None)
    try:
        target = tester.built_image(loaded, image)
        report = tester.run_checks(loaded, target, accelerator.choose(accel), reporter, loaded.output.uri)
    except KeyboardInterrupt:
        raise _fail(Interrupted("interrupted"), json_output) from None
    except ImageBuilderError as exc:
        raise _fail(exc, json_output) from None
    stem = target.parent / loaded.name if loaded.output.path else None
    junit = junit or (Path(f"{stem}.junit.xml") if stem else Path(f"{loaded.name}.junit.xml"))
    summary = summary or junit.with_name(junit.name.replace(".junit.xml", "") + ".tests.json")
    report.junit(junit)
    report.write_summary(summary)
    reporter.info(f"reports: {junit} {summary}")
    if json_output:
        print(json.dumps({"event": "result", **report.summary(), "junit": str(junit), "summary": str(summary)}))
    if report.failed:
        typer.echo(f"error: {len(report.failed)} of {len(report.outcomes)} checks failed: "
                   + ", ".join(o.check.name for o in report.failed), err=True)
        raise typer.Exit(1)
    typer.echo(f"all {len(report.outcomes)} checks passed")


@app.command("plan")
def plan_command(
    path: RecipeArg,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="As for build.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Cache directory.", envvar="IMAGEBUILDER_CACHE_DIR")] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="The manifest of the earlier build.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
) -> None:
    """Show what `build` would do now: each stage cached or to run, and why (like a terraform plan)."""
    from imagebuilder.pipeline import BuildOptions, plan
    try:
        loaded = recipe.load(path)
        result = plan(loaded, BuildOptions(cache_dir=cache_dir, output_file=output, manifest_path=manifest),
                      Reporter("plain", io.StringIO()))
    except ImageBuilderError as exc:
        raise _fail(exc, json_output) from None
    if json_output:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"{loaded.name}: {'up to date' if result['up_to_date'] else 'will build'} ({result['reason']})")
    for row in result["stages"]:
        why = f"  ({row['why']})" if row["why"] else ""
        typer.echo(f"  {row['name']:28} {row['status']}{why}")


@app.command("test")
def test_command(
    path: RecipeArg,
    image: Annotated[Optional[Path], typer.Option(help="The image to test (default: the recipe's output).")] = None,
    junit: Annotated[Optional[Path], typer.Option(help="JUnit XML report (default: NAME.junit.xml beside it).")] = None,
    summary: Annotated[Optional[Path], typer.Option(help="JSON summary (default: NAME.tests.json).")] = None,
    accel: Annotated[Optional[str], typer.Option(help="auto, kvm or tcg.", envvar="IMAGEBUILDER_ACCEL")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable JSON lines on stdout.")] = False,
) -> None:
    """Check a built image with the recipe's [[tests]]: offline file and package checks, and commands
    in a throwaway domain booted on an overlay (the image is never changed). Exit 1 if any fails."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        loaded = recipe.load(path)
    except ImageBuilderError as exc:
        raise _fail(exc, json_output) from None
    _test(loaded, image, junit, summary, accel, json_output)


@app.command()
def inspect(
    image: Annotated[Path, typer.Argument(help="A disk image file.", show_default=False)],
    json_output: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
    accel: Annotated[Optional[str], typer.Option(help="auto, kvm or tcg.", envvar="IMAGEBUILDER_ACCEL")] = None,
) -> None:
    """Show what libguestfs inspection finds in an image (read-only)."""
    from imagebuilder import accel as accelerator, disk
    from imagebuilder.guest.inspect import describe_image
    try:
        if not image.is_file():
            raise InputError(f"{image}: no such file")
        fmt, _size = disk.probe(image)
        facts = describe_image(image, fmt, accelerator.choose(accel))
    except ImageBuilderError as exc:
        raise _fail(exc, json_output) from None
    if json_output:
        typer.echo(json.dumps(facts, indent=2, sort_keys=True))
        return
    typer.echo(f"{image} ({fmt})")
    for device, fstype in sorted(facts["filesystems"].items()):
        typer.echo(f"  {device}: {fstype}")
    for system in facts["operating_systems"]:
        typer.echo(f"  {system['root']}: {system['product_name']} ({system['distro']} {system['version']}, "
                   f"{system['arch']}, {system['package_management']}, osinfo {system['osinfo']})")
    if not facts["operating_systems"]:
        typer.echo("  no operating system found")


cache_app = typer.Typer(help="Manage the download and bootstrap cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
CacheDir = Annotated[Optional[Path], typer.Option(help="Cache directory.", envvar="IMAGEBUILDER_CACHE_DIR")]


@cache_app.command("list")
def cache_list(cache_dir: CacheDir = None,
               json_output: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False) -> None:
    """List cached base images and bootstrap results, most recently used first."""
    from imagebuilder.cache import Cache
    entries = Cache(cache_dir).entries()
    if json_output:
        typer.echo(json.dumps([{"kind": e.kind, "name": e.name, "path": str(e.path), "bytes": e.size,
                                "last_used": e.last_used, "urls": list(e.urls)} for e in entries], indent=2))
        return
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        typer.echo(f"{e.kind:9} {e.name[:40]:40} {e.size / 2**20:9.1f} MiB  {when}  {' '.join(e.urls)}")
    total = sum(e.size for e in entries)
    typer.echo(f"{len(entries)} entries, {total / 2**20:.1f} MiB in {Cache(cache_dir).root}")


@cache_app.command("prune")
def cache_prune(
    cache_dir: CacheDir = None,
    older_than: Annotated[Optional[str], typer.Option(help="Delete entries unused for this long (e.g. 30d).")] = None,
    keep: Annotated[Optional[int], typer.Option(help="Keep only the N most recently used entries.")] = None,
) -> None:
    """Delete cache entries by age of last use and/or beyond a count; with neither option, delete all."""
    from imagebuilder import units
    from imagebuilder.cache import Cache
    try:
        seconds = units.parse_duration(older_than) if older_than else None
    except ValueError as exc:
        raise _fail(InputError(f"--older-than: {exc}"), False) from None
    if keep is not None and keep < 0:
        raise _fail(InputError("--keep must be 0 or more"), False)
    if seconds is None and keep is None:
        keep = 0
    removed = Cache(cache_dir).prune(older_than=seconds, keep=keep)
    typer.echo(f"removed {len(removed)} entries, {sum(e.size for e in removed) / 2**20:.1f} MiB")


templates_app = typer.Typer(help="virt-builder templates in the configured repositories (like virt-builder "
                                 "--list and --notes).", no_args_is_help=True)
app.add_typer(templates_app, name="templates")
RepoOpt = Annotated[Optional[list[str]], typer.Option(
    "--repo", help="An index URL to use instead of the repos.d repositories (repeatable).")]
RepoKeyOpt = Annotated[Optional[Path], typer.Option(help="The key (file) that signs the --repo indexes.")]


def _warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


@templates_app.command("list")
def templates_list(repo: RepoOpt = None, repo_key: RepoKeyOpt = None,
                   json_output: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False) -> None:
    """List the templates (name, arch, description); hidden ones are left out."""
    from imagebuilder.sources import repos, template
    try:
        found = template.listing(repos.select(repo, repo_key), _warn)
    except ImageBuilderError as exc:
        raise _fail(exc, json_output) from None
    if json_output:
        typer.echo(json.dumps(found.as_json(), indent=2))
        return
    for line in found.lines():
        typer.echo(line)


@templates_app.command("notes")
def templates_notes(
    name: Annotated[str, typer.Argument(help="A template name or alias.", show_default=False)],
    arch: Annotated[str, typer.Option(help="The template's architecture.")] = "x86_64",
    repo: RepoOpt = None, repo_key: RepoKeyOpt = None,
) -> None:
    """Print a template's notes."""
    from imagebuilder.sources import repos, template
    try:
        found = template.notes(name, arch, repos.select(repo, repo_key), _warn)
    except ImageBuilderError as exc:
        raise _fail(exc, False) from None
    text = found.template.notes_for(os.environ.get("LC_ALL") or os.environ.get("LANG"))
    typer.echo(text if text is not None else f"There are no notes for {found.template.name}.")


schedule_app = typer.Typer(help="Scheduled rebuilds: systemd timers that run `build RECIPE --if-changed`.",
                           no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")
UnitDirOpt = Annotated[Optional[Path], typer.Option(
    help="Where the unit files are (default: /etc/systemd/system, or ~/.config/systemd/user with --user).")]
UserOpt = Annotated[bool, typer.Option("--user", help="Units of the user's systemd (systemctl --user).")]


def _commands_line(commands: list[list[str]]) -> str:
    import shlex
    return " && ".join(shlex.join(argv) for argv in commands)


@schedule_app.command("install")
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
    from imagebuilder import schedule
    try:
        loaded = recipe.load(path)
        plan, next_elapse = schedule.plan(path, loaded.name, on_calendar, name=name,
                                          randomized_delay=randomized_delay, user=user)
        outcome = schedule.install(plan, unit_dir or schedule.default_unit_dir(user))
    except ImageBuilderError as exc:
        raise _fail(exc, False) from None
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


@schedule_app.command("list")
def schedule_list(
    unit_dir: UnitDirOpt = None, user: UserOpt = False,
    json_output: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """The schedules `schedule install` wrote into the unit directory (other units are ignored)."""
    from imagebuilder import schedule
    found = schedule.installed(unit_dir or schedule.default_unit_dir(user))
    if json_output:
        typer.echo(json.dumps([entry.as_dict() for entry in found], indent=2))
        return
    table = [("NAME", "ON-CALENDAR", "STATE", "RECIPE")]
    for e in found:
        state = ("enabled" if e.enabled else "disabled") + ("" if e.service else ", no service")
        table.append((e.name, e.on_calendar, state, e.recipe + ("" if e.recipe_exists else " (missing)")))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@schedule_app.command("remove")
def schedule_remove(
    name: Annotated[str, typer.Argument(help="The schedule's name (as `schedule list` shows).", show_default=False)],
    unit_dir: UnitDirOpt = None, user: UserOpt = False,
) -> None:
    """Stop, disable and delete a schedule's units; only units `schedule install` wrote."""
    from imagebuilder import schedule
    try:
        outcome = schedule.remove(name, unit_dir or schedule.default_unit_dir(user), user)
    except ImageBuilderError as exc:
        raise _fail(exc, False) from None
    for warning in outcome.warnings:
        _warn(warning)
    typer.echo(f"removed {' and '.join(str(p) for p in outcome.files)}")
    if outcome.todo:
        typer.echo(f"{outcome.why_not or 'systemctl failed'}; then run: {_commands_line(outcome.todo)}")


@app.command("xml")
def xml_command(
    path: RecipeArg,
    accel: Annotated[Optional[str], typer.Option(
        help="Accelerator the XML is for: auto, kvm or tcg.", envvar="IMAGEBUILDER_ACCEL")] = None,
) -> None:
    """Print the domain XML a recipe makes (checked with virt-xml-validate), without building."""
    from imagebuilder import accel as accelerator
    from imagebuilder.virt.spec import recipe_xml
    try:
        text = recipe_xml(recipe.load(path), accelerator.choose(accel))
    except ImageBuilderError as exc:
        raise _fail(exc, False) from None
    typer.echo(text, nl=False)


vm_app = typer.Typer(help="Domains in plain words: list, start, stop (ACPI), kill (hard), remove, console.",
                     no_args_is_help=True)
app.add_typer(vm_app, name="vm")
ConnectOpt = Annotated[Optional[str], typer.Option(
    "--connect", "-c", show_default=False,
    help="libvirt URI; default as virsh: $LIBVIRT_DEFAULT_URI, then libvirt's configured default.")]
NameArg = Annotated[str, typer.Argument(help="The domain's name.", show_default=False)]


def _vm(uri: Optional[str], action, json_mode: bool = False):  # noqa: ANN001, ANN202 - a callback runner
    """Run action(conn) on a libvirt connection; errors become exit codes, Ctrl-C exits 130."""
    from imagebuilder.virt.connection import connect
    try:
        with connect(uri) as conn:
            return action(conn)
    except KeyboardInterrupt:
        raise _fail(Interrupted("interrupted"), json_mode) from None
    except ImageBuilderError as exc:
        raise _fail(exc, json_mode) from None


def _duration(text: str, option: str) -> int:
    from imagebuilder.units import parse_duration
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise _fail(InputError(f"{option}: {exc}"), False) from None


@vm_app.command("list")
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
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@vm_app.command("start")
def vm_start(
    name: NameArg, connect: ConnectOpt = None,
    wait: Annotated[str, typer.Option(help="Then wait for: agent, ssh, serial:TEXT or none.")] = "none",
    timeout: Annotated[str, typer.Option(help="How long to wait, e.g. 300s or 10m.")] = "10m",
) -> None:
    """Start (boot) a defined domain, and optionally wait until it is ready."""
    from imagebuilder.virt import connection, domain, wait as waiting
    try:
        kind, text = recipe.parse_wait(wait)
    except ValueError as exc:
        raise _fail(InputError(f"--wait: {exc}"), False) from None
    seconds = _duration(timeout, "--timeout")

    def action(conn) -> str:  # noqa: ANN001
        dom = domain.lookup(conn, name)
        if dom.isActive():
            message = f"{name} is already running"
        else:
            domain.start(dom)
            message = f"started {name}"
        if kind != "none":
            log = domain.serial_log_of(dom) if connection.is_local(conn) else None
            message += f"; {waiting.wait_ready(conn, dom, kind, text, seconds, log)}"
        return message

    typer.echo(_vm(connect, action))


@vm_app.command("stop")
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
    seconds = _duration(timeout, "--timeout")

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


@vm_app.command("kill")
def vm_kill(name: NameArg, connect: ConnectOpt = None) -> None:
    """Stop a domain at once, like pulling the power cord (libvirt's destroy)."""
    from imagebuilder.virt import domain
    typer.echo(_vm(connect, lambda conn: f"killed {name}" if domain.kill(domain.lookup(conn, name))
                   else f"{name} is not running"))


@vm_app.command("remove")
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


@vm_app.command("console")
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


# fleets: up, down, destroy (a recipe's [[machines]] or [fleet]) and clone (ad hoc clones of a volume)

AccelOpt = Annotated[Optional[str], typer.Option(help="auto, kvm or tcg.", envvar="IMAGEBUILDER_ACCEL")]


def _fleet_run(action, json_output: bool = False):  # noqa: ANN001, ANN202 - a callback runner
    """Run action(); errors become exit codes, Ctrl-C exits 130."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return action()
    except KeyboardInterrupt:
        raise _fail(Interrupted("interrupted"), json_output) from None
    except ImageBuilderError as exc:
        raise _fail(exc, json_output) from None


@app.command()
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
    from imagebuilder import fleet
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(name)s: %(message)s")
    if parallel < 0:
        raise _fail(InputError("--parallel must be 0 or more"), json_output)
    options = fleet.FleetOptions(accel=accel, cache_dir=cache_dir, parallel=parallel, wait=wait)
    result = _fleet_run(lambda: fleet.up(recipe.load(path), options, Reporter("json" if json_output else None)),
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


@app.command()
def down(
    path: RecipeArg,
    timeout: Annotated[str, typer.Option(help="How long the machines may take to shut down.")] = "2m",
    force: Annotated[bool, typer.Option(help="Kill machines that have not shut down in time.")] = False,
) -> None:
    """Shut the recipe's running machines down (guest agent, else ACPI) and wait until they are off."""
    from imagebuilder import fleet
    seconds = _duration(timeout, "--timeout")
    stopped = _fleet_run(lambda: fleet.down(recipe.load(path), seconds, force, Reporter()))
    typer.echo(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def destroy(
    path: RecipeArg,
    keep_golden: Annotated[bool, typer.Option(help="Keep the golden volume (remove only the machines).")] = False,
) -> None:
    """Remove the recipe's machines with the overlays, seeds and data disks made for them, then the golden
    volume, which is refused (exit 1) while any clone still uses it as backing store."""
    from imagebuilder import fleet
    removed = _fleet_run(lambda: fleet.destroy(recipe.load(path), keep_golden, Reporter()))
    typer.echo(f"removed {', '.join(removed)}" if removed else "nothing to remove")


@app.command("clone")
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
    from imagebuilder import fleet
    made = _fleet_run(lambda: fleet.clone(connect, pool, volume, name, count, customize or [], accel, Reporter()))
    typer.echo(f"cloned {volume}: {', '.join(made)}")


@app.command()
def ops(
    json_output: Annotated[bool, typer.Option("--json", help="Print the registry as JSON.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the reference page (docs/operations.md).")] = False,
) -> None:
    """List the customization and sysprep operations a recipe can use."""
    from imagebuilder.guest import reference

    if json_output:
        typer.echo(json.dumps(reference.as_json(), indent=2))
    elif markdown:
        typer.echo(reference.markdown(), nl=False)
    else:
        typer.echo(reference.as_text(), nl=False)


@app.command()
def convert(
    commands: Annotated[Path, typer.Argument(help="A virt-customize --commands-from-file file.", show_default=False)],
    name: Annotated[Optional[str], typer.Option(help="[image] name (default: the file's name).")] = None,
    base: Annotated[Optional[str], typer.Option(
        help="The base image: a path (relative to the recipe) or an http(s) URL (default: bootstrap Debian 12).")] = None,
    checksum: Annotated[Optional[str], typer.Option(help="sha256:HEX of a --base URL.")] = None,
) -> None:
    """Print a recipe that does what a virt-customize commands file does: `convert legacy.cmds > recipe.toml`."""
    from imagebuilder.guest import commands_file

    try:
        if base and "://" in base:
            if not checksum:
                raise InputError("--base with a URL needs --checksum sha256:HEX (or --checksum none)")
            base_lines = ["[base]", f"url = {commands_file.toml_string(base)}",
                          f"checksum = {commands_file.toml_string(checksum)}"]
        elif base:
            base_lines = ["[base]", f"path = {commands_file.toml_string(base)}"]
        else:
            base_lines = ["# The base image: replace with `path = \"…\"`, `url = \"…\"` or `template = \"…\"`.",
                          "[base.bootstrap]", 'suite = "bookworm"']
        image_name = name or "".join(c if c.isalnum() or c in "_.+-" else "-" for c in commands.stem) or "converted"
        text = commands_file.to_recipe(commands, image_name, base_lines)
    except ImageBuilderError as exc:
        raise _fail(exc, False) from None
    typer.echo(text, nl=False)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    """Console script entry point."""
    app(prog_name="imagebuilder")


if __name__ == "__main__":
    sys.exit(main())
