"""What a build writes beside its manifest to be trusted and compared: the SBOM (SPDX and CycloneDX)
and, with a signing key, the signed provenance; and a line saying what changed since the last build.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from imagebuilder import files
from imagebuilder.attest import changes, provenance, signing
from imagebuilder.guest import passwords
from imagebuilder.guest.inventory import NoPackageDatabase, read_packages
from imagebuilder.guest.tree import tree_digest
from imagebuilder.manifest import Manifest
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe, Sign
from imagebuilder.sbom import cyclonedx, spdx
from imagebuilder.sbom.model import Artifact, Inventory, OperatingSystem, Package, build_time, digest_hex
from imagebuilder.sources.base import BaseImage

TREE_LEAVES_OUT = ("file times (modification, change, access), and everything outside the files: partition table, "
                   "filesystem UUIDs, superblock times, free space and block layout")
SUFFIXES = {"spdx": ".spdx.json", "cyclonedx": ".cdx.json", "provenance": ".intoto.jsonl"}


@dataclass
class Contents:
    """What the customize session read from the finished image: its OS and packages."""

    os: OperatingSystem
    packages: list[Package] = field(default_factory=list)
    licence_texts: dict[str, str] = field(default_factory=dict)
    tree: tuple[str, int] | None = None  # the file tree's digest and entry count, when asked for


def read(g: Any, root: str, tree: bool = False, say: Callable[[str], None] | None = None) -> Contents:
    """In a session on the finished, mounted image: its OS and packages, and its tree digest if asked.
    An image whose packages cannot be listed gets an SBOM without packages, and `say` tells why."""
    try:
        system, packages, texts = read_packages(g, root)
    except NoPackageDatabase as exc:
        if say is not None:
            say(f"the SBOM lists no packages: {exc.message}")
        system, packages, texts = exc.system, [], {}
    return Contents(system, packages, texts, tree_digest(g) if tree else None)


def paths(manifest_path: Path, version: int | None) -> dict[str, Path]:
    """Where the records of a build go: beside its manifest, NAME.spdx.json … (NAME-N.… for version N)."""
    stem = manifest_path.name.removesuffix(".manifest.json")
    if version is not None:
        stem = f"{stem}-{version}"
    return {kind: manifest_path.with_name(stem + suffix) for kind, suffix in SUFFIXES.items()}


def inputs(recipe: Recipe, base: BaseImage) -> tuple[list[Artifact], list[str]]:
    """The build's inputs with their digests (recipe, base, host files) and the secret host files, by name."""
    found = [Artifact("recipe", recipe.file.name, recipe.digest, str(recipe.file)),
             Artifact.of("base", _base_name(base), base.digest, base.source)]
    secret: list[str] = []
    seen: set[str] = set()
    for step in recipe.steps:
        for host_file in step.host_files:
            where = str(host_file.path)
            if where in seen:
                continue
            seen.add(where)
            if host_file.digest:
                found.append(Artifact.of("host-file", _relative(host_file.path, recipe), host_file.digest, where))
            else:
                secret.append(_relative(host_file.path, recipe))
    return found, secret


def write(recipe: Recipe, base: BaseImage, contents: Contents, outputs: list[dict[str, Any]], manifest_path: Path,
          accel: str, started: datetime, sign: Sign | None, version: int | None,
          reporter: Reporter, image_digest: str) -> dict[str, Any]:
    """Write the SBOMs and (when sign is given) the provenance of a finished build whose image has
    image_digest; returns the manifest's "records" entry: the files with their sha256, and the package count."""
    where = paths(manifest_path, version)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    sources, secret = inputs(recipe, base)
    image = Artifact.of("image", f"{recipe.name}.{recipe.disk.format}", image_digest)
    inventory = Inventory(image, contents.os, contents.packages, sources, contents.licence_texts,
                          created=build_time(datetime.now(timezone.utc)))
    spdx.write(inventory, where["spdx"])
    cyclonedx.write(inventory, where["cyclonedx"])
    record: dict[str, Any] = {"packages": len(contents.packages),
                              "spdx": _file_entry(where["spdx"]), "cyclonedx": _file_entry(where["cyclonedx"])}
    reporter.info(f"SBOM: {where['spdx'].name}, {where['cyclonedx'].name} ({len(contents.packages)} packages)")
    if contents.tree is not None:
        record["tree"] = {"digest": contents.tree[0], "entries": contents.tree[1], "leaves_out": TREE_LEAVES_OUT}
        reporter.info(f"file tree: {contents.tree[0]} ({contents.tree[1]} entries)")
    if sign is not None:
        facts = provenance.BuildFacts(
            subjects=subjects(image, outputs), recipe=sources[0], base=sources[1], base_kind=base.kind,
            host_files=sources[2:], secret_files=secret, accelerator=accel, started=started,
            finished=datetime.now(timezone.utc), builder=provenance.builder_id(sign.builder),
            byproducts=[Artifact("sbom", where[k].name, record[k]["sha256"]) for k in ("spdx", "cyclonedx")])
        envelope = signing.sign(provenance.payload(provenance.statement(facts)), sign.key, passphrase(sign))
        tmp = where["provenance"].with_name(where["provenance"].name + ".tmp")
        tmp.write_text(signing.dumps(envelope) + "\n")
        tmp.replace(where["provenance"])
        record["provenance"] = _file_entry(where["provenance"])
        record["signed_by"] = [s["keyid"] for s in envelope["signatures"]]
        reporter.info(f"provenance: {where['provenance'].name}, signed by {', '.join(record['signed_by'])}")
    return record


def passphrase(sign: Sign) -> bytes | None:
    """The signing key's passphrase, read now from its file or variable (None: the key has none)."""
    return passwords.read_secret(sign.passphrase).encode() if sign.passphrase is not None else None


def check_key(sign: Sign) -> None:
    """Sign a few bytes with the key before any work, so that a wrong key or passphrase stops the
    build at once instead of after it."""
    signing.sign(b"imagebuilder: checking the signing key", sign.key, passphrase(sign))


def earlier_packages(earlier: Manifest | None) -> list[Package] | None:
    """The packages the SBOM of the build the earlier manifest records lists (None: it has none);
    read before this build writes its own, which may have the same name."""
    before = (earlier.records.get("cyclonedx") or {}).get("path") if earlier else None
    return cyclonedx.read_packages(Path(before)) if before and Path(before).is_file() else None


def summarise_change(before: list[Package] | None, record: dict[str, Any], reporter: Reporter) -> None:
    """Log in one line what this build changed in the packages since the earlier build."""
    if before is None:
        return
    difference = changes.packages(before, cyclonedx.read_packages(Path(record["cyclonedx"]["path"])))
    reporter.info(f"changes since the last build: {changes.one_line(difference)}")


def subjects(image: Artifact, outputs: list[dict[str, Any]]) -> list[Artifact]:
    """What the provenance vouches for: the image, and each file, volume and registry image (by its
    manifest's digest) it was published as."""
    found = [image]
    for output in outputs:
        found.append(Artifact.of(output["type"], _published_name(output), output["digest"], output.get("uri", "")))
    unique: dict[str, Artifact] = {}
    for artifact in found:
        unique.setdefault(artifact.name, artifact)
    return list(unique.values())


def _published_name(output: dict[str, Any]) -> str:
    if output["type"] == "file":
        return Path(output["path"]).name
    if output["type"] == "oci":
        return output["ref"]
    return f"{output['pool']}/{output['volume']}"


def _file_entry(path: Path) -> dict[str, str]:
    return {"path": str(path), "sha256": digest_hex(files.file_digest(path))}


def _base_name(base: BaseImage) -> str:
    return base.source.rstrip("/").rsplit("/", 1)[-1] if "://" in base.source else base.source


def _relative(path: Path, recipe: Recipe) -> str:
    try:
        return str(Path(path).relative_to(recipe.base_dir.resolve()))
    except ValueError:
        return str(path)
