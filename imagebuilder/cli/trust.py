"""Trusting and comparing images: verify a signed build, write an SBOM for any image, diff two images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from imagebuilder.cli.common import AccelOpt, ConnectOpt, echo_table, exit_on_error
from imagebuilder.errors import InputError

if TYPE_CHECKING:
    from imagebuilder.attest.changes import PackageChanges

FilesOpt = Annotated[Optional[list[str]], typer.Option(
    "--files", metavar="DIR", help="Compare the files under this guest directory by sha256 (repeatable; "
                                   "default /etc; --files none compares packages only).")]


def verify(
    image: Annotated[str, typer.Argument(help="An image file, or a volume: POOL/VOLUME (or VOLUME with --pool).",
                                         show_default=False)],
    key: Annotated[Path, typer.Option(help="The public key: PEM (ed25519, ECDSA, RSA) or an ASCII-armoured "
                                           "OpenPGP key.", show_default=False)],
    provenance: Annotated[Optional[Path], typer.Option(
        help="The signed provenance (NAME.intoto.jsonl); default: found beside the file or among the manifests "
             "by the image's digest.")] = None,
    pool: Annotated[Optional[str], typer.Option(help="The pool of a volume.")] = None,
    connect: ConnectOpt = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
) -> None:
    """Check that an image is what a signed build made: its sha256 recomputed, the provenance's
    signature checked with KEY, its subject compared; exit 1 on any mismatch."""
    from imagebuilder.attest import verify as verifying
    with exit_on_error(json_output):
        found = verifying.target(image, pool, connect)
        verified = verifying.verify(found, key, provenance)
    if json_output:
        typer.echo(json.dumps({"verified": True, "subject": verified.subject, "digest": verified.digest,
                               "envelope": str(verified.envelope), "signed_by": verified.keyids,
                               "statement": verified.statement}, indent=2))
        return
    for line in verifying.describe(verified):
        typer.echo(line)


def sbom(
    image: Annotated[Path, typer.Argument(help="A disk image file (opened read-only).", show_default=False)],
    spdx: Annotated[Optional[Path], typer.Option(help="The SPDX 2.3 JSON file (default: IMAGE-NAME.spdx.json "
                                                      "here).")] = None,
    cyclonedx: Annotated[Optional[Path], typer.Option(help="The CycloneDX 1.6 JSON file (default: "
                                                           "IMAGE-NAME.cdx.json here).")] = None,
    accel: AccelOpt = None,
) -> None:
    """Write an SBOM (SPDX and CycloneDX) of any image, from its own package database (one read-only launch)."""
    from imagebuilder import accel as accelerator, disk, files
    from imagebuilder.guest.snapshot import read_images
    from imagebuilder.sbom import cyclonedx as cdx, spdx as spdx_writer
    from imagebuilder.sbom.model import Artifact, Inventory, digest_hex
    with exit_on_error():
        if not image.is_file():
            raise InputError(f"{image}: no such file")
        fmt, _size = disk.probe(image)
        (snapshot,) = read_images([image], fmt, accelerator.choose(accel))
        inventory = Inventory(Artifact("image", image.name, digest_hex(files.file_digest(image))), snapshot.os,
                              snapshot.packages, licence_texts=snapshot.licence_texts)
        stem = image.name.split(".", 1)[0]
        spdx = spdx or Path(f"{stem}.spdx.json")
        cyclonedx = cyclonedx or Path(f"{stem}.cdx.json")
        spdx_writer.write(inventory, spdx)
        cdx.write(inventory, cyclonedx)
    typer.echo(f"{image}: {len(snapshot.packages)} packages ({snapshot.os.product or snapshot.os.distro}); "
               f"wrote {spdx} and {cyclonedx}")


def diff(
    first: Annotated[Path, typer.Argument(help="The earlier image file.", show_default=False)],
    second: Annotated[Path, typer.Argument(help="The later image file.", show_default=False)],
    files: FilesOpt = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
    accel: AccelOpt = None,
) -> None:
    """What changed between two images: packages added, removed, upgraded, downgraded, and files under
    /etc (or --files) that differ; both images read-only in one launch."""
    from imagebuilder import accel as accelerator, disk
    from imagebuilder.attest import changes
    from imagebuilder.guest.snapshot import read_images
    directories = tuple(files or ["/etc"]) if files != ["none"] else ()
    with exit_on_error(json_output):
        formats = []
        for image in (first, second):
            if not image.is_file():
                raise InputError(f"{image}: no such file")
            formats.append(disk.probe(image)[0])
        if formats[0] != formats[1]:
            raise InputError(f"{first} is {formats[0]} and {second} is {formats[1]}: convert one so both have "
                             "the same format")
        before, after = read_images([first, second], formats[0], accelerator.choose(accel), directories)
    packages = changes.packages(before.packages, after.packages)
    changed_files = changes.files(before.files, after.files)
    if json_output:
        typer.echo(json.dumps({"packages": packages.as_json(), "files": changed_files,
                               "compared": list(directories)}, indent=2))
        return
    render(packages, changed_files, directories)


def render(packages: PackageChanges, changed_files: dict[str, list[str]] | None,
           directories: tuple[str, ...] = ()) -> None:
    """Print package changes as a table, then the files that differ."""
    from imagebuilder.attest import changes
    typer.echo(changes.one_line(packages))
    if not packages.empty:
        echo_table(changes.table(packages))
    if changed_files is None:
        return
    total = sum(len(v) for v in changed_files.values())
    typer.echo(f"files under {', '.join(directories)}: " + ("none differ" if not total else f"{total} differ"))
    for kind in ("added", "removed", "changed"):
        for path in changed_files[kind]:
            typer.echo(f"  {kind:8} {path}")
