"""`imagebuilder templates`: the virt-builder templates in the configured repositories."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from imagebuilder.cli.common import exit_on_error, warn

app = typer.Typer(help="virt-builder templates in the configured repositories (like virt-builder "
                       "--list and --notes).", no_args_is_help=True)
RepoOpt = Annotated[Optional[list[str]], typer.Option(
    "--repo", help="An index URL to use instead of the repos.d repositories (repeatable).")]
RepoKeyOpt = Annotated[Optional[Path], typer.Option(help="The key (file) that signs the --repo indexes.")]


@app.command("list")
def templates_list(repo: RepoOpt = None, repo_key: RepoKeyOpt = None,
                   json_output: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False) -> None:
    """List the templates (name, arch, full name) like virt-builder --list; hidden ones are left out."""
    from imagebuilder.sources import repos, template
    with exit_on_error(json_output):
        found = template.listing(repos.select(repo, repo_key, warn), warn)
    if json_output:
        typer.echo(json.dumps(found.as_json(), indent=2))
        return
    for line in found.lines():
        typer.echo(line)


@app.command("notes")
def templates_notes(
    name: Annotated[str, typer.Argument(help="A template name or alias.", show_default=False)],
    arch: Annotated[str, typer.Option(help="The template's architecture.")] = "x86_64",
    repo: RepoOpt = None, repo_key: RepoKeyOpt = None,
) -> None:
    """Print a template's notes in the language of LC_ALL, LC_MESSAGES or LANG (like virt-builder --notes)."""
    from imagebuilder.sources import repos, template
    with exit_on_error():
        found = template.notes(name, arch, repos.select(repo, repo_key, warn), warn)
    locale = next((os.environ[v] for v in ("LC_ALL", "LC_MESSAGES", "LANG") if os.environ.get(v)), None)
    text = found.template.notes_for(locale)
    typer.echo(text if text is not None else f"There are no notes for {found.template.name}")
