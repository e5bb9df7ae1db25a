"""The command line: thin; parses options, calls the pipeline, renders results and exit codes."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from imagebuilder import __version__, recipe
from imagebuilder.errors import ImageBuilderError, InputError, Interrupted
from imagebuilder.progress import Reporter

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Build customized VM images from TOML recipes and boot them under libvirt.")

RecipeArg = Annotated[Path, typer.Argument(help="The recipe file (TOML).", show_default=False)]


def _fail(exc: ImageBuilderError, json_mode: bool) -> typer.Exit:
    if json_mode:
        print(json.dumps({"event": "error", "type": type(exc).__name__, "message": str(exc),
                          "exit_code": exc.exit_code}))
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(exc.exit_code)


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise Interrupted("stopped by SIGTERM")


@app.command()
def validate(path: RecipeArg) -> None:
    """Check a recipe (syntax, types, keys, host files) without building anything."""
    try:
        loaded = recipe.load(path)
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
) -> None:
    """Build the image a recipe describes, publish it, and define and boot its domain."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(name)s: %(message)s")
    reporter = Reporter("json" if json_output else None)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        loaded = recipe.load(path)
        from imagebuilder.pipeline import BuildOptions, build as run_build
        options = BuildOptions(accel=accel, cache_dir=cache_dir, force=force, output_file=output,
                               keep_on_failure=keep_on_failure, manifest_path=manifest)
        result = run_build(loaded, options, reporter)
    except KeyboardInterrupt:
        raise _fail(Interrupted("interrupted"), json_output) from None
    except ImageBuilderError as exc:
        raise _fail(exc, json_output) from None
    if json_output:
        print(json.dumps({"event": "result", "manifest": str(result.manifest_path), "outputs": result.outputs}))
    else:
        typer.echo(f"built {loaded.name} in {sum(result.manifest['timings'].values()):.0f}s")


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


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    """Console script entry point."""
    app(prog_name="imagebuilder")


if __name__ == "__main__":
    sys.exit(main())
