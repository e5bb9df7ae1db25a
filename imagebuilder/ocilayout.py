"""OCI image layouts on disk (the image-spec's `oci-layout`, `index.json`, `blobs/sha256/…`): written
here for skopeo to push, and read after skopeo pulled into one.

Blobs that are files already (a checkpoint in the cache) are hard-linked in, not copied.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagebuilder.files import file_digest

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
TITLE = "org.opencontainers.image.title"
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Descriptor:
    """What a manifest says about a blob."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The descriptor as the image-spec writes it."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Descriptor:
        """A descriptor from a manifest."""
        return cls(data["mediaType"], data["digest"], int(data["size"]), dict(data.get("annotations") or {}))


class Layout:
    """An OCI image layout rooted at `root` (made if missing)."""

    def __init__(self, root: Path):
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        if not (root / "oci-layout").exists():
            (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def blob_path(self, digest: str) -> Path:
        """Where the blob with this digest is (or goes)."""
        algo, _, hexdigest = digest.partition(":")
        return self.root / "blobs" / algo / hexdigest

    def add_bytes(self, data: bytes, media_type: str) -> Descriptor:
        """A small blob (a manifest, a config) from bytes."""
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        self.blob_path(digest).write_bytes(data)
        return Descriptor(media_type, digest, len(data))

    def add_file(self, path: Path, media_type: str, digest: str | None = None,
                 annotations: dict[str, str] | None = None) -> Descriptor:
        """A blob holding a file's bytes: hard-linked when on the same filesystem, else copied."""
        digest = digest or file_digest(path)
        target = self.blob_path(digest)
        if not target.exists():
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
        return Descriptor(media_type, digest, path.stat().st_size, dict(annotations or {}))

    def add_manifest(self, tag: str, config: Descriptor, layers: list[Descriptor],
                     annotations: dict[str, str] | None = None, artifact_type: str | None = None,
                     subject: Descriptor | None = None) -> Descriptor:
        """Write an image manifest and name it `tag` in index.json; returns its descriptor."""
        document: dict[str, Any] = {"schemaVersion": 2, "mediaType": MANIFEST}
        if artifact_type:
            document["artifactType"] = artifact_type
        document["config"] = config.to_json()
        document["layers"] = [layer.to_json() for layer in layers]
        if subject:
            document["subject"] = subject.to_json()
        if annotations:
            document["annotations"] = dict(annotations)
        descriptor = self.add_bytes(json.dumps(document, sort_keys=True).encode(), MANIFEST)
        index = self.index()
        index["manifests"] = [m for m in index["manifests"] if (m.get("annotations") or {}).get(REF_NAME) != tag]
        index["manifests"].append({**descriptor.to_json(), "annotations": {REF_NAME: tag}})
        (self.root / "index.json").write_text(json.dumps(index, sort_keys=True))
        return descriptor

    def index(self) -> dict[str, Any]:
        """index.json (an empty index when there is none yet)."""
        try:
            return json.loads((self.root / "index.json").read_text())
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}

    def manifest(self, tag: str) -> tuple[dict[str, Any], str]:
        """The image manifest named `tag` and its digest (an index is followed to its first manifest)."""
        found = next((m for m in self.index()["manifests"] if (m.get("annotations") or {}).get(REF_NAME) == tag), None)
        if found is None:
            raise KeyError(tag)
        document = json.loads(self.blob_path(found["digest"]).read_bytes())
        if document.get("mediaType") == INDEX or "manifests" in document:
            first = document["manifests"][0]
            return json.loads(self.blob_path(first["digest"]).read_bytes()), first["digest"]
        return document, found["digest"]
