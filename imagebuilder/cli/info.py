"""Commands that only print: what is in an image, a recipe's domain XML, the operations, a recipe made
from a commands file, the version."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from imagebuilder import __version__, recipe
from imagebuilder.cli.common import AccelOpt, RecipeArg, exit_on_error
from imagebuilder.errors import InputError


def inspect(
    image: Annotated[Path, typer.Argument(help="A disk image file.", show_default=False)],
    json_output: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
    accel: AccelOpt = None,
) -> None:
    """Show what libguestfs inspection finds in an image (read-only)."""
    from imagebuilder import accel as accelerator, disk
    from imagebuilder.guest.inspect import describe_image
    with exit_on_error(json_output):
        if not image.is_file():
            raise InputError(f"{image}: no such file")
        fmt, _size = disk.probe(image)
        facts = describe_image(image, fmt, accelerator.choose(accel))
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


def xml_command(
    path: RecipeArg,
    accel: Annotated[Optional[str], typer.Option(
        help="Accelerator the XML is for: auto, kvm or tcg.", envvar="IMAGEBUILDER_ACCEL")] = None,
) -> None:
    """Print the domain XML a recipe makes (checked with virt-xml-validate), without building."""
    from imagebuilder import accel as accelerator
    from imagebuilder.deploy.spec import recipe_xml
    with exit_on_error():
        text = recipe_xml(recipe.load(path), accelerator.choose(accel))
    typer.echo(text, nl=False)


def versions_command(
    path: RecipeArg,
    manifest_path: Annotated[Optional[Path], typer.Option(
        "--manifest", help="The manifest of the recipe's builds (default: where build writes it).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
    use: Annotated[Optional[str], typer.Option(
        "--use", metavar="N|newest", help="Roll back: point the alias at version N and hold it there (builds go on "
                                          "making versions but leave the alias); 'newest' releases the hold.")] = None,
    diff: Annotated[Optional[tuple[int, int]], typer.Option(
        "--diff", metavar="A B", help="What changed from version A to version B: packages (from their SBOMs), "
                                      "recipe, base and steps.")] = None,
) -> None:
    """List the versions of a versioned output volume that builds made: newest first, which one the
    alias names, and which were deleted or kept beyond `keep` (and why); --use rolls back; --diff
    compares two versions."""
    from imagebuilder import hold, manifest, versions
    from imagebuilder.cli.common import echo_table
    from imagebuilder.progress import Reporter
    with exit_on_error(json_output):
        loaded = recipe.load(path)
        if loaded.output.alias is None:
            raise InputError(f"{path}: output.volume '{loaded.output.volume}' has no placeholders, so builds of this "
                             "recipe make no versions")
        if use is not None:
            name = hold.use(loaded, use, manifest_path, Reporter("plain", sys.stderr))
            typer.echo(f"the alias {loaded.output.alias} names {name}" +
                       ("" if use == hold.NEWEST else f" (held at version {use}; `--use newest` releases it)"))
            return
    where = manifest_path or manifest.default_path(loaded, None, loaded.output.pool)
    document = manifest.previous(where) or manifest.Manifest()
    if diff is not None:
        _version_diff(document.versions, diff, json_output)
        return
    main = document.main_output()
    alias_path = Path(main["path"]).with_name(main["alias"]) if main else None
    names = str(alias_path.readlink()) if alias_path and alias_path.is_symlink() else None
    rows = versions.listing(document.versions, names, document.held)
    if json_output:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no versions recorded yet ({where})")
        return
    echo_table([["", "N", "BUILT", "DIGEST", "VOLUMES", "STATE"]] +
               [[("*" if row["alias"] else "") + ("H" if row["held"] else ""), str(row["n"]), row["built"],
                 row["digest"], " ".join(row["volumes"]) or "-", row["state"]] for row in rows])
    typer.echo(f"* the version the alias {loaded.output.alias} names" +
               ("; H: held there by `versions --use`" if document.held is not None else ""))


def _version_diff(history: list[dict], numbers: tuple[int, int], json_output: bool) -> None:
    """Print what changed between two recorded versions."""
    from imagebuilder.attest import changes
    from imagebuilder.cli.trust import render
    from imagebuilder.sbom.cyclonedx import read_packages
    with exit_on_error(json_output):
        entries = []
        for number in numbers:
            entry = next((e for e in history if e.get("n") == number), None)
            sbom = ((entry or {}).get("records") or {}).get("cyclonedx", {}).get("path")
            if entry is None or not sbom:
                raise InputError(f"version {number} " + ("is not recorded" if entry is None else
                                                         "has no SBOM (built before imagebuilder wrote them)"))
            entries.append((entry, read_packages(Path(sbom))))
    (old, old_packages), (new, new_packages) = entries
    packages = changes.packages(old_packages, new_packages)
    build_notes = changes.builds(old, new)
    if json_output:
        typer.echo(json.dumps({"from": numbers[0], "to": numbers[1], "packages": packages.as_json(),
                               "build": build_notes}, indent=2))
        return
    typer.echo(f"version {numbers[0]} → {numbers[1]}")
    for note in build_notes:
        typer.echo(note)
    render(packages, None)


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


def convert(
    commands: Annotated[Path, typer.Argument(help="A virt-customize --commands-from-file file.", show_default=False)],
    name: Annotated[Optional[str], typer.Option(help="[image] name (default: the file's name).")] = None,
    base: Annotated[Optional[str], typer.Option(
        help="The base image: a path (relative to the recipe) or an http(s) URL (default: bootstrap Debian 12).")] = None,
    checksum: Annotated[Optional[str], typer.Option(help="sha256:HEX of a --base URL.")] = None,
) -> None:
    """Print a recipe that does what a virt-customize commands file does: `convert legacy.cmds > recipe.toml`."""
    from imagebuilder.guest import commands_file

    with exit_on_error():
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
    typer.echo(text, nl=False)


def version() -> None:
    """Print the version."""
    typer.echo(__version__)
