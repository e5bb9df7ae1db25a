"""The recipe model: the frozen dataclasses that the section parsers fill in and the build reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagebuilder import values
from imagebuilder.checks import Check
from imagebuilder.guest import ops

FORMATS = ("qcow2", "raw")  # of the image (Disk) and of new data disks (DataDisk)


@dataclass(frozen=True)
class Bootstrap:
    """Build the base from distribution packages with mmdebstrap."""

    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    packages: tuple[str, ...] = ()
    kernel: str | None = None          # the kernel package; None: the distribution's generic one


@dataclass(frozen=True)
class Base:
    """Where the base image comes from: exactly one of url, oci, path, bootstrap, template."""

    url: str | None = None
    oci: str | None = None             # a KubeVirt containerDisk: registry/repo:tag and/or @sha256:…
    checksum: str | None = None
    checksum_url: str | None = None
    signature_url: str | None = None
    keyring: Path | None = None
    path: Path | None = None
    bootstrap: Bootstrap | None = None
    template: str | None = None        # a virt-builder template name or alias
    repo: str | None = None            # the index URL to find it in (default: the repos.d repositories)
    repo_key: Path | None = None       # the key that signs that index
    arch: str = "x86_64"

    @property
    def kind(self) -> str:
        """'url', 'oci', 'path', 'template' or 'bootstrap'."""
        if self.oci:
            return "oci"
        return "url" if self.url else "path" if self.path else "template" if self.template else "bootstrap"


@dataclass(frozen=True)
class Disk:
    """Output disk format and optional size to grow to (bytes)."""

    format: str = "qcow2"
    size: int | None = None
    compress: bool = False


@dataclass(frozen=True)
class Step:
    """One customization step: a registered operation, its parsed argument, and where it was written."""

    op: str
    arg: Any
    line: int | None
    source: Path | None = None                  # the commands file it came from; None: the recipe
    included_at: int | None = None             # for a commands file's step: the recipe line including it
    host_files: tuple[values.HostFile, ...] = ()  # host files it reads, with their digests
    checkpoint: bool | None = None              # keep the image after this step (None: if it is a long one)

    def describe(self) -> str:
        """Text for logs and the manifest (never contains secrets)."""
        return f"{self.op}: {ops.REGISTRY[self.op].describe(self.arg)}"

    def where(self, recipe_file: Path) -> str:
        """FILE:LINE of the step, for error messages."""
        if self.source is None:
            return f"{recipe_file}:{self.line}" if self.line else str(recipe_file)
        return f"{self.source}:{self.line} (included at {recipe_file}:{self.included_at})"

    def record(self) -> dict[str, Any]:
        """The manifest entry: the description (no secrets), where it was written, the host files' digests."""
        entry: dict[str, Any] = {"op": self.op, "describe": self.describe(), "line": self.line,
                                 "host_files": [f.record() for f in self.host_files]}
        if self.source is not None:
            entry["source"] = str(self.source)
        return entry


@dataclass(frozen=True)
class Target:
    """One more libvirt host (or pool) that gets a copy of the image, and the domain if asked."""

    uri: str
    pool: str = "default"
    volume: str = ""
    domain: bool = False


@dataclass(frozen=True)
class OciOutput:
    """[[output.oci]]: a KubeVirt containerDisk pushed to a registry."""

    ref: str                   # registry/repo:tag, the tag may have placeholders ({date}, {n}, …)
    compression: str = "gzip"  # of the layer: gzip, zstd or none


@dataclass(frozen=True)
class RepoOutput:
    """[[output.repo]]: a virt-builder repository (a directory) that gets the image and its index entry."""

    path: Path
    name: str                    # the template's name in the index (os-version)
    title: str | None = None     # the index's name= (default: the OS inspection found)
    key: str | None = None       # the GPG key (id, fingerprint or e-mail) that clearsigns index.asc
    gnupghome: Path | None = None
    osinfo: str | None = None
    notes: str | None = None
    arch: str = "x86_64"
    xz_level: int = 6


@dataclass(frozen=True)
class FileOutput:
    """[[output.files]]: the image in another format, for other hypervisors (vmdk, vhd, vhdx, ova, …)."""

    path: Path
    format: str


@dataclass(frozen=True)
class Output:
    """Where the image goes: a libvirt pool volume, a local file, or both; plus further targets."""

    libvirt: bool = True
    uri: str = "qemu:///system"
    pool: str = "default"
    volume: str = ""  # may be a template such as "web-{date}-{n}.qcow2": a new version each build
    path: Path | None = None
    targets: tuple[Target, ...] = ()
    alias: str | None = None  # with a template: the stable name that points at the newest version
    keep: int | None = None  # with a template: how many versions to keep (None: all)
    oci: tuple[OciOutput, ...] = ()
    repos: tuple[RepoOutput, ...] = ()
    files: tuple[FileOutput, ...] = ()

    @property
    def current(self) -> str:
        """The volume that holds the newest image: the alias of versioned names, else the volume."""
        return self.alias or self.volume


@dataclass(frozen=True)
class Interface:
    """A NIC: on a libvirt network or a host bridge; no MAC means one is generated at deploy."""

    network: str | None = None
    bridge: str | None = None
    mac: str | None = None
    model: str = "virtio"


@dataclass(frozen=True)
class DataDisk:
    """An extra disk: a new empty volume of `size`, or (without size) an existing volume."""

    volume: str
    size: int | None = None
    format: str | None = None
    bus: str = "virtio"
    pool: str | None = None  # None: the image's pool


@dataclass(frozen=True)
class Domain:
    """The libvirt domain to define (and start) from the published volume."""

    name: str
    memory: int = 1 << 30
    vcpus: int = 1
    cpu: str | None = None
    machine: str = "pc"
    firmware: str = "bios"
    interfaces: tuple[Interface, ...] = (Interface(network="default"),)
    disks: tuple[DataDisk, ...] = ()
    graphics: str = "none"
    listen: str = "127.0.0.1"
    video: str = "vga"
    memballoon: bool = True
    rng: bool = True
    agent: bool = True
    osinfo: str | None = None
    start: bool = True
    wait: str = "agent"
    wait_text: str | None = None
    timeout: int = 600

    @property
    def network(self) -> str | None:
        """The libvirt network of the first NIC on one, if any."""
        return next((nic.network for nic in self.interfaces if nic.network), None)

    @property
    def networks(self) -> list[str]:
        """Every libvirt network the NICs use, once each."""
        return list(dict.fromkeys(nic.network for nic in self.interfaces if nic.network))


@dataclass(frozen=True)
class Machine:
    """One clone of the fleet: a domain on a thin overlay of the golden volume (see fleet/)."""

    name: str            # the domain's name; its overlay is NAME.qcow2
    hostname: str
    domain: Domain       # [domain] with this machine's overrides, named after it
    line: int | None = None

    @property
    def overlay(self) -> str:
        """The overlay volume, in the golden volume's pool."""
        return f"{self.name}.qcow2"


@dataclass(frozen=True)
class CloudInit:
    """[cloud_init]: a NoCloud seed (ISO labelled cidata) per machine, attached as a CD-ROM."""

    user_data: str | None = None        # the text: a file's content, or an inline table as #cloud-config
    meta_data: tuple[tuple[str, Any], ...] = ()  # extra meta-data keys ({name}, {hostname} replaced)
    network_config: str | None = None   # YAML text
    host_files: tuple[values.HostFile, ...] = ()


@dataclass(frozen=True)
class Sign:
    """[sign]: the provenance is signed with this key (a PEM or OpenPGP secret key file)."""

    key: Path
    passphrase: Any = None       # a PasswordSpec of kind file or env, or None
    builder: str | None = None   # the builder id in the provenance (default: user@host)


@dataclass(frozen=True)
class SharedCacheSettings:
    """[cache]: registries that share stage results between machines, and the key secret they share."""

    sources: tuple[str, ...] = ()
    target: str | None = None
    secret_file: Path | None = None


@dataclass(frozen=True)
class Recipe:
    """A validated recipe."""

    file: Path
    digest: str
    name: str
    base: Base
    disk: Disk
    steps: tuple[Step, ...]
    sysprep: tuple[str, ...]
    output: Output
    domain: Domain | None
    network: bool = field(default=False)
    tests: tuple[Check, ...] = ()
    machines: tuple[Machine, ...] = ()    # a fleet: then `domain` is None ([domain] is their template)
    cloud_init: CloudInit | None = None
    sign: Sign | None = None
    tree_digest: bool = False   # [reproducible] tree_digest: record the file tree's digest
    cache: SharedCacheSettings = SharedCacheSettings()

    @property
    def base_dir(self) -> Path:
        """The directory recipe paths are relative to."""
        return self.file.parent
