"""`imagebuilder verify`: is this image the one a trusted build made? The image's sha256 recomputed,
the provenance's signature checked with the given key, its subject compared with the image.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagebuilder import files, manifest
from imagebuilder.attest import provenance, signing
from imagebuilder.errors import ImageBuilderError, InputError
from imagebuilder.sbom.model import digest_hex


class VerificationFailed(ImageBuilderError):
    """The image, the signature or the statement does not match. Exit code 1."""


@dataclass
class Target:
    """What to verify: a file, or a volume (pool/volume at a libvirt URI)."""

    file: Path | None = None
    uri: str | None = None
    pool: str = "default"
    volume: str = ""

    @property
    def name(self) -> str:
        """The name a provenance subject gives it: the file's name, or POOL/VOLUME."""
        return self.file.name if self.file is not None else f"{self.pool}/{self.volume}"


@dataclass
class Verified:
    """A verified image: its digest, how it was read, the envelope and the statement."""

    digest: str
    read: str
    envelope: Path
    statement: dict[str, Any]
    subject: str
    keyids: list[str]


def target(image: str, pool: str | None, uri: str | None) -> Target:
    """A file when image names one (and no --pool is given), else POOL/VOLUME or VOLUME in --pool."""
    if pool is None and Path(image).is_file():
        return Target(file=Path(image))
    if "/" in image and pool is None:
        pool_name, volume = image.split("/", 1)
    else:
        pool_name, volume = pool or "default", image
    if not volume or "/" in volume:
        raise InputError(f"'{image}' is neither an image file nor a volume (POOL/VOLUME, or VOLUME with --pool)")
    return Target(uri=uri, pool=pool_name, volume=volume)


def digest_of(found: Target) -> tuple[str, str]:
    """The sha256 of the target and how it was read."""
    if found.file is not None:
        return files.file_digest(found.file), "read from the file"
    from imagebuilder.virt.digest import volume_digest
    return volume_digest(found.uri, found.pool, found.volume)


def verify(found: Target, key: Path, envelope_path: Path | None = None) -> Verified:
    """Check found against its signed provenance; VerificationFailed naming the first mismatch."""
    keys = signing.public_keys(key)
    digest, how = digest_of(found)
    path = envelope_path or locate(found, digest)
    try:
        envelope = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read the provenance {path}: {exc.strerror}") from None
    except ValueError:
        raise VerificationFailed(f"{path} is not JSON: the envelope was damaged") from None
    try:
        payload = signing.open_envelope(envelope, keys)
    except signing.SignatureError as exc:
        raise VerificationFailed(f"{path}: {exc.message}") from None
    try:
        statement = provenance.parse(payload)
    except ValueError as exc:
        raise VerificationFailed(f"{path}: the signed statement is not SLSA provenance: {exc}") from None
    subjects = statement.get("subject", [])
    matching = [s["name"] for s in subjects if s.get("digest", {}).get("sha256") == digest_hex(digest)]
    if not matching:
        named = ", ".join(f"{s.get('name')} sha256:{s.get('digest', {}).get('sha256', '?')[:12]}…" for s in subjects)
        raise VerificationFailed(f"{found.name} is sha256:{digest_hex(digest)[:12]}…, but the signed provenance "
                                 f"{path.name} vouches for {named}: the image was changed after the build")
    chosen = next((name for name in matching if name == found.name), None) or \
        next((name for name in matching if name.rsplit("/", 1)[-1] == found.name), matching[0])
    return Verified(digest, how, path, statement, chosen, [s["keyid"] for s in envelope.get("signatures", [])])


def locate(found: Target, digest: str) -> Path:
    """The envelope whose (unverified) subjects name the image's digest, else its name; searched
    beside the file and among the manifests of the state directory."""
    candidates = _envelopes(found)
    by_name = None
    for path in candidates:
        subjects = _subjects(path)
        if any(s.get("digest", {}).get("sha256") == digest_hex(digest) for s in subjects):
            return path
        if by_name is None and any(s.get("name") == found.name for s in subjects):
            by_name = path
    if by_name is not None:
        return by_name  # verify then says what differs
    raise InputError(f"no provenance for {found.name} found beside it or in {manifest.state_dir() / 'manifests'}; "
                     "give it with --provenance")


def _envelopes(found: Target) -> list[Path]:
    places = [found.file.resolve().parent] if found.file is not None else []
    root = manifest.state_dir() / "manifests"
    if root.is_dir():
        places += sorted(p for p in root.iterdir() if p.is_dir())
    return [path for place in places for path in sorted(place.glob("*.intoto.jsonl"),
                                                        key=lambda p: p.stat().st_mtime, reverse=True)]


def _subjects(path: Path) -> list[dict[str, Any]]:
    """The subjects an envelope claims, read without checking anything (only to find the right one)."""
    try:
        payload = json.loads(base64.b64decode(json.loads(path.read_text())["payload"]))
        return list(payload.get("subject", []))
    except (OSError, ValueError, KeyError, TypeError):
        return []


def describe(verified: Verified) -> list[str]:
    """The provenance in plain words."""
    predicate = verified.statement["predicate"]
    definition, run = predicate["buildDefinition"], predicate["runDetails"]
    recipe = definition["externalParameters"].get("recipe", {})
    internal = definition.get("internalParameters", {})
    lines = [f"OK: {verified.subject} is sha256:{digest_hex(verified.digest)} ({verified.read})",
             f"signed by {', '.join(verified.keyids)} ({verified.envelope})",
             f"built by {run['builder']['id']} with imagebuilder {internal.get('imagebuilder', '?')}"
             f" ({internal.get('accelerator', '?')})"]
    meta = run.get("metadata", {})
    if meta.get("startedOn"):
        lines.append(f"from {meta['startedOn']} to {meta.get('finishedOn', '?')}")
    lines.append(f"recipe {recipe.get('name')} sha256:{recipe.get('digest', {}).get('sha256', '?')}")
    for dependency in definition.get("resolvedDependencies", []):
        role = dependency.get("annotations", {}).get("role", "input")
        digest = dependency.get("digest", {}).get("sha256")
        where = f" from {dependency['uri']}" if dependency.get("uri") and role == "base" else ""
        lines.append(f"{role} {dependency.get('name')}{where} " + (f"sha256:{digest}" if digest else "(a secret: no digest)"))
    others = [s["name"] for s in verified.statement["subject"] if s["name"] != verified.subject]
    if others:
        lines.append(f"the same build also published: {', '.join(others)}")
    return lines
