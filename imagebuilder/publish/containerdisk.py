"""The image as a KubeVirt containerDisk: an OCI image whose one layer holds /disk/NAME.qcow2 owned
by uid and gid 107 (qemu in KubeVirt's virt-launcher), as KubeVirt documents it
(`ADD --chown=107:107 NAME.qcow2 /disk/`), pushed to a registry with skopeo.

The layer is written in one streaming pass (tar, then gzip or zstd), hashed on the way for the
layer's digest and the config's diff_id. Timestamps in the layer are fixed, so an unchanged disk
makes the same blob and the registry already has it. Files are attached to the pushed image as OCI
referrers (an artifact whose `subject` is the image, listed in the `sha256-HEX` tag's index, the
OCI 1.1 fallback for registries without the referrers API): a build's SBOMs and provenance.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from imagebuilder import ocilayout, registry
from imagebuilder.ocilayout import Descriptor, Layout

DISK_OWNER = 107  # uid and gid of qemu in KubeVirt's virt-launcher
LAYER_TYPES = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
               "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
               "none": "application/vnd.oci.image.layer.v1.tar"}
ANNOTATION = "org.imagebuilder"
REFERRER_TAG = "{algo}-{hex}"  # the OCI 1.1 referrers tag schema
CHUNK = 1 << 20


@dataclass(frozen=True)
class Attachment:
    """A file to attach to the pushed image as a referrer (an SBOM, a provenance statement)."""

    path: Path
    media_type: str


class _Hashing:
    """A write-only file object that hashes and counts what passes through to `sink`."""

    def __init__(self, sink: Any):
        self.sink, self.hasher, self.size = sink, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)

    @property
    def digest(self) -> str:
        return f"sha256:{self.hasher.hexdigest()}"


class _Compressing:
    """A write-only file object compressing into `sink`; close() flushes it."""

    def __init__(self, sink: Any, compression: str):
        self.sink = sink
        if compression == "gzip":
            self._c: Any = zlib.compressobj(1, zlib.DEFLATED, 31)  # level 1: fast, and qcow2 data gains little more
        elif compression == "zstd":
            import zstandard
            self._c = zstandard.ZstdCompressor(level=3, threads=-1).compressobj()
        else:
            self._c = None

    def write(self, data: bytes) -> int:
        self.sink.write(self._c.compress(data) if self._c else data)
        return len(data)

    def close(self) -> None:
        if self._c:
            self.sink.write(self._c.flush())


def write_layer(disk: Path, name: str, out: BinaryIO, compression: str) -> tuple[str, str, int]:
    """Write the layer (disk/ and disk/NAME, owned by 107:107) to out; returns (digest, diff_id, size)."""
    blob = _Hashing(out)
    packer = _Compressing(blob, compression)
    plain = _Hashing(packer)
    with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[arg-type]
        folder = tarfile.TarInfo("disk")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o555
        member = tarfile.TarInfo(f"disk/{name}")
        member.size, member.mode = disk.stat().st_size, 0o440
        for info in (folder, member):
            info.uid = info.gid = DISK_OWNER
            info.uname = info.gname = ""
            info.mtime = 0
        tar.addfile(folder)
        with open(disk, "rb") as source:
            tar.addfile(member, source)
    packer.close()
    return blob.digest, plain.digest, blob.size


def build_layout(root: Path, disk: Path, name: str, tag: str, compression: str,
                 annotations: dict[str, str]) -> Descriptor:
    """An OCI layout at root holding the containerDisk image named tag; returns its manifest's descriptor."""
    layout = Layout(root)
    with tempfile.NamedTemporaryFile(dir=root, prefix=".layer-", delete=False) as handle:
        partial = Path(handle.name)
        digest, diff_id, size = write_layer(disk, name, handle, compression)
    partial.replace(layout.blob_path(digest))
    layer = Descriptor(LAYER_TYPES[compression], digest, size)
    created = annotations.get("org.opencontainers.image.created") or \
        datetime.now(timezone.utc).isoformat(timespec="seconds")
    config = {"architecture": "amd64", "os": "linux", "created": created, "config": {"Labels": annotations},
              "rootfs": {"type": "layers", "diff_ids": [diff_id]},
              "history": [{"created": created, "created_by": f"imagebuilder: containerDisk /disk/{name}"}]}
    config_blob = layout.add_bytes(json.dumps(config, sort_keys=True).encode(), ocilayout.IMAGE_CONFIG)
    return layout.add_manifest(tag, config_blob, [layer], annotations)


def push(disk: Path, name: str, ref: str, compression: str, annotations: dict[str, str], scratch: Path) -> Descriptor:
    """Push disk as a containerDisk to ref; returns the pushed manifest's descriptor (the subject of referrers)."""
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".oci-") as root:
        descriptor = build_layout(Path(root), disk, name, "disk", compression, annotations)
        registry.push_layout(Path(root), "disk", ref)
    return descriptor


def attach(repo: str, subject: Descriptor, attachments: list[Attachment], scratch: Path) -> list[str]:
    """Push each file as an artifact that refers to subject in repo, and list them all in the referrers tag's
    index (kept with the referrers already there); returns the artifacts' digests."""
    algo, _, hexdigest = subject.digest.partition(":")
    referrers_tag = REFERRER_TAG.format(algo=algo, hex=hexdigest)
    try:
        index, _ = registry.manifest(f"{repo}:{referrers_tag}")
    except registry.RegistryError as exc:
        if not exc.missing:
            raise
        index = {"schemaVersion": 2, "mediaType": ocilayout.INDEX, "manifests": []}
    pushed = []
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".oci-") as root:
        layout = Layout(Path(root))
        empty = layout.add_bytes(b"{}", ocilayout.EMPTY)
        for number, item in enumerate(attachments):
            blob = layout.add_file(item.path, item.media_type, annotations={ocilayout.TITLE: item.path.name})
            tag = f"attachment-{number}"
            artifact = layout.add_manifest(tag, empty, [blob], artifact_type=item.media_type, subject=subject)
            registry.push_layout(Path(root), tag, f"{repo}@{artifact.digest}")
            index["manifests"] = [m for m in index["manifests"] if m["digest"] != artifact.digest]
            index["manifests"].append({**artifact.to_json(), "artifactType": item.media_type})
            pushed.append(artifact.digest)
        listing = layout.add_bytes(json.dumps(index, sort_keys=True).encode(), ocilayout.INDEX)
        entries = layout.index()
        entries["manifests"].append({**listing.to_json(), "annotations": {ocilayout.REF_NAME: referrers_tag}})
        (Path(root) / "index.json").write_text(json.dumps(entries, sort_keys=True))
        registry.push_layout(Path(root), referrers_tag, f"{repo}:{referrers_tag}", index_only=True)
    return pushed
