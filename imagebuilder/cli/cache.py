"""`imagebuilder cache`: list and prune the cache (downloads, bootstraps, checkpoints, packages)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Optional

import typer

from imagebuilder.cli.common import CacheDirOpt, duration, fail
from imagebuilder.errors import InputError

app = typer.Typer(help="Manage the cache: base images, bootstraps, checkpoints and packages.", no_args_is_help=True)


@app.command("list")
def cache_list(cache_dir: CacheDirOpt = None,
               json_output: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False) -> None:
    """List cache entries (base images, bootstraps, checkpoints, package sets), most recently used first."""
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


@app.command("prune")
def cache_prune(
    cache_dir: CacheDirOpt = None,
    older_than: Annotated[Optional[str], typer.Option(help="Delete entries unused for this long (e.g. 30d).")] = None,
    keep: Annotated[Optional[int], typer.Option(help="Keep only the N most recently used entries.")] = None,
) -> None:
    """Delete cache entries by age of last use and/or beyond a count; with neither option, delete all."""
    from imagebuilder.cache import Cache
    seconds = duration(older_than, "--older-than") if older_than else None
    if keep is not None and keep < 0:
        raise fail(InputError("--keep must be 0 or more"), False)
    if seconds is None and keep is None:
        keep = 0
    removed = Cache(cache_dir).prune(older_than=seconds, keep=keep)
    typer.echo(f"removed {len(removed)} entries, {sum(e.size for e in removed) / 2**20:.1f} MiB")
