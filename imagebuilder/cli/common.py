"""What the command modules share: argument and option types, errors turned into exit codes, SIGTERM."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from imagebuilder.errors import ImageBuilderError, InputError, Interrupted

RecipeArg = Annotated[Path, typer.Argument(help="The recipe file (TOML).", show_default=False)]
StrictPathsOpt = Annotated[bool, typer.Option(
    "--strict-paths", help="Refuse host paths (absolute, '..', symlinks, file:// URLs) that lead outside the "
                           "recipe's directory.", envvar="IMAGEBUILDER_STRICT_PATHS")]
NoInlineSecretsOpt = Annotated[bool, typer.Option(
    "--no-inline-secrets", help="Refuse passwords written in the recipe or its commands files "
                                "(password:TEXT); use file:PATH or env:VAR.", envvar="IMAGEBUILDER_NO_INLINE_SECRETS")]
AccelOpt = Annotated[Optional[str], typer.Option(help="auto, kvm or tcg.", envvar="IMAGEBUILDER_ACCEL")]
CacheDirOpt = Annotated[Optional[Path], typer.Option(help="Cache directory.", envvar="IMAGEBUILDER_CACHE_DIR")]
ConnectOpt = Annotated[Optional[str], typer.Option(
    "--connect", "-c", show_default=False,
    help="libvirt URI; default as virsh: $LIBVIRT_DEFAULT_URI, then libvirt's configured default.")]


def fail(exc: ImageBuilderError, json_mode: bool) -> typer.Exit:
    """Print the error (also as a JSON event in JSON mode) and return the exit that carries its code."""
    if json_mode:
        print(json.dumps({"event": "error", "type": type(exc).__name__, "message": str(exc),
                          "exit_code": exc.exit_code}))
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(exc.exit_code)


@contextmanager
def exit_on_error(json_mode: bool = False) -> Iterator[None]:
    """Turn an ImageBuilderError raised inside into its exit code, and Ctrl-C into exit 130, for
    every command alike."""
    try:
        yield
    except KeyboardInterrupt:
        raise fail(Interrupted("interrupted"), json_mode) from None
    except ImageBuilderError as exc:
        raise fail(exc, json_mode) from None


def check_output_file(path: Path | None) -> None:
    """--output is one fixed file name: versioned names are made for pool volumes only."""
    from imagebuilder import versions
    try:
        versioned = path is not None and versions.is_template(path.name)
    except ValueError:
        versioned = True
    if versioned:
        raise InputError(f"--output {path}: versioned names (placeholders such as {{n}}) are made for "
                         "output.volume only; give the file a fixed name")


def on_sigterm(_signum: int, _frame: object) -> None:
    """SIGTERM handler: stop like Ctrl-C does, so that clean-up runs and the exit code says why."""
    raise Interrupted("stopped by SIGTERM")


def warn(message: str) -> None:
    """Print a warning on stderr."""
    typer.echo(f"warning: {message}", err=True)


def duration(text: str, option: str) -> int:
    """Seconds in a duration option such as 300s or 10m; a bad one exits 2 naming the option."""
    from imagebuilder.units import parse_duration
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise fail(InputError(f"{option}: {exc}"), False) from None


def echo_table(table: Sequence[Sequence[str]]) -> None:
    """Print rows (the first one the heading) in columns as wide as their widest cell."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
