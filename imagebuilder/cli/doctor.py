"""`imagebuilder doctor`: is this host ready to build? Each check with what to do about it."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from imagebuilder.cli.common import CacheDirOpt, ConnectOpt, exit_on_error

_MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


def doctor(
    connect: ConnectOpt = None,
    cache_dir: CacheDirOpt = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON instead of text (for CI).")] = False,
) -> None:
    """Check this host: accelerator (and why), qemu, firmware, the libguestfs appliance, libvirt, the default
    pool and network, mmdebstrap, free space, permissions. Exit 1 if something blocks a build."""
    from imagebuilder import doctor as checks

    def show(finding) -> None:  # noqa: ANN001
        if json_output:
            return
        typer.echo(f"{_MARK[finding.status]}  {finding.check}: {finding.detail}")
        if finding.hint and finding.status != "ok":
            typer.echo(f"        hint: {finding.hint}")

    with exit_on_error(json_output):
        findings = checks.run_checks(connect, cache_dir, show)
    blocked = checks.blocking(findings)
    if json_output:
        typer.echo(json.dumps({"ready": not blocked, "checks": [f.as_dict() for f in findings]}, indent=2))
    else:
        typer.echo("ready to build" if not blocked else "not ready: fix what is marked FAIL")
    raise typer.Exit(1 if blocked else 0)
