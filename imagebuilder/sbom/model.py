"""What an SBOM says about an image: its packages, its operating system and the inputs it was made from.

Plain records, filled by guest/inventory.py (inside the appliance) and read by the SPDX and CycloneDX
writers; no library of either format is needed to make or test them.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from packageurl import PackageURL

# libguestfs's package formats, and the PURL type of each (https://github.com/package-url/purl-spec)
PURL_TYPES = {"deb": "deb", "rpm": "rpm", "apk": "apk", "pacman": "alpm"}


@dataclass(frozen=True)
class Package:
    """One installed package, as the image's own package database declares it."""

    name: str
    version: str                  # the full version as the package manager writes it (epoch included)
    arch: str = ""
    source: str = ""              # the source package (Debian Source:, apk origin, rpm source rpm)
    source_version: str = ""      # when it differs from version (Debian "Source: name (version)")
    supplier: str = ""            # Maintainer / packager, "Name <email>"
    homepage: str = ""
    summary: str = ""
    licence: str | None = None    # an SPDX licence expression, None when the package declares none we can read
    epoch: int = 0

    @property
    def key(self) -> str:
        """name:arch, as dpkg names a package (the key two package lists are compared by)."""
        return f"{self.name}:{self.arch}" if self.arch else self.name


@dataclass(frozen=True)
class OperatingSystem:
    """The inspected OS: distro id (debian), its version (12), product name, package format."""

    distro: str
    version: str
    product: str = ""
    package_format: str = ""
    arch: str = ""

    @property
    def distro_qualifier(self) -> str:
        """PURL's distro qualifier: debian-12 (the major version for Debian, as Debian names releases)."""
        version = self.version.split(".")[0] if self.distro == "debian" else self.version.removesuffix(".0")
        return f"{self.distro}-{version}" if version else self.distro


@dataclass(frozen=True)
class Artifact:
    """An input or output file named by its digest: the image, the base, the recipe, a host file."""

    role: str          # image, base, recipe, host-file
    name: str
    hex: str           # the digest in hex, without "ALGORITHM:" (see algorithm)
    location: str = ""  # where it came from (a URL, a path)
    algorithm: str = "sha256"  # sha256; sha512 for a virt-builder template or repository file

    @staticmethod
    def of(role: str, name: str, digest: str, location: str = "") -> Artifact:
        """An artifact from an 'ALGORITHM:HEX' digest (or a bare sha256 HEX)."""
        algorithm, _, hex_digest = digest.rpartition(":")
        return Artifact(role, name, hex_digest, location, algorithm or "sha256")


@dataclass
class Inventory:
    """Everything an SBOM holds: the image, its OS and packages, and what it was built from."""

    image: Artifact
    os: OperatingSystem
    packages: list[Package] = field(default_factory=list)
    inputs: list[Artifact] = field(default_factory=list)
    licence_texts: dict[str, str] = field(default_factory=dict)  # LicenseRef-X -> the text given for it
    created: datetime | None = None

    @property
    def uuid(self) -> uuid.UUID:
        """The document's id: the same for the same image, packages and inputs, so that an SBOM is as
        reproducible as the image it describes (SPDX's namespace, CycloneDX's serial number)."""
        text = "\n".join([self.image.hex, *(f"{p.key} {p.version}" for p in self.packages),
                          *(f"{a.role} {a.hex}" for a in self.inputs)])
        return uuid.uuid5(uuid.NAMESPACE_URL, "imagebuilder:sbom:" + text)


def purl(package: Package, os: OperatingSystem) -> str:
    """The package URL, such as pkg:deb/debian/nginx-light@1.22.1-9?arch=amd64&distro=debian-12."""
    kind = PURL_TYPES.get(os.package_format, "generic")
    qualifiers = {"arch": package.arch} if package.arch else {}
    if kind == "rpm" and package.epoch:
        qualifiers["epoch"] = str(package.epoch)
    if kind != "generic":
        qualifiers["distro"] = os.distro_qualifier
    if package.source and package.source != package.name and kind in ("deb", "rpm"):
        upstream = package.source + (f"@{package.source_version}" if package.source_version else "")
        qualifiers["upstream"] = upstream
    namespace = os.distro if kind != "generic" else None
    version = package.version
    if kind == "rpm" and package.epoch and version.startswith(f"{package.epoch}:"):
        version = version.split(":", 1)[1]  # the epoch is a qualifier in rpm PURLs
    return PackageURL(type=kind, namespace=namespace, name=package.name, version=version or None,
                      qualifiers=qualifiers).to_string()


def build_time(now: datetime) -> datetime:
    """$SOURCE_DATE_EPOCH as a time when it is set (reproducible builds' convention), else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    return datetime.fromtimestamp(int(epoch), timezone.utc) if epoch.isdigit() else now


def digest_hex(digest: str) -> str:
    """'ALGORITHM:HEX' or 'HEX' as HEX."""
    return digest.rpartition(":")[2]
