"""The command line: thin; parses options, calls the pipeline, renders results and exit codes."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from imagebuilder import __version__, recipe
from imagebuilder.errors import ImageBuilderError, Interrupted
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
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    """Console script entry point."""
    app(prog_name="imagebuilder")


if __name__ == "__main__":
    sys.exit(main())
