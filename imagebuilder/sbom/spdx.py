"""The SBOM as an SPDX 2.3 JSON document, made and validated with spdx-tools.

The document describes the image (a package with its sha256); the image CONTAINS its operating
system and every installed package, and is GENERATED_FROM the base image, the recipe and the host
files the steps read (packages with their sha256: SPDX files would need a SHA-1 nobody computed).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from email.utils import parseaddr
from pathlib import Path

from spdx_tools.spdx.model import (Actor, ActorType, Checksum, ChecksumAlgorithm, CreationInfo, Document,
                                   ExternalPackageRef, ExternalPackageRefCategory, ExtractedLicensingInfo, Package,
                                   PackagePurpose, Relationship, RelationshipType, SpdxNoAssertion)
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
from spdx_tools.spdx.validation.uri_validators import validate_download_location
from spdx_tools.spdx.writer.json.json_writer import write_document_to_file

from imagebuilder import __version__
from imagebuilder.errors import BuildError
from imagebuilder.sbom import licences
from imagebuilder.sbom.model import Artifact, Inventory, purl
from imagebuilder.sbom.model import Package as InstalledPackage

NAMESPACE = "https://imagebuilder.invalid/spdx"  # + image name and a UUID: unique per document, as SPDX asks
_ID = re.compile(r"[^A-Za-z0-9.-]+")
_PURPOSES = {"image": PackagePurpose.FILE, "base": PackagePurpose.FILE, "recipe": PackagePurpose.FILE,
             "host-file": PackagePurpose.FILE}


def document(inventory: Inventory) -> Document:
    """The SPDX document of an inventory."""
    created = inventory.created or datetime.now(timezone.utc)
    image = _artifact(inventory.image, "SPDXRef-Image")
    system = Package(spdx_id="SPDXRef-OperatingSystem", name=inventory.os.distro, version=inventory.os.version,
                     download_location=SpdxNoAssertion(), files_analyzed=False, summary=inventory.os.product or None,
                     primary_package_purpose=PackagePurpose.OPERATING_SYSTEM)
    packages = [image, system]
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, image.spdx_id),
                     Relationship(image.spdx_id, RelationshipType.CONTAINS, system.spdx_id)]
    seen: set[str] = set()
    for installed in inventory.packages:
        package = _package(installed, inventory, seen)
        packages.append(package)
        relationships.append(Relationship(image.spdx_id, RelationshipType.CONTAINS, package.spdx_id))
    for index, source in enumerate(inventory.inputs, 1):
        package = _artifact(source, f"SPDXRef-Input-{index}-{_ID.sub('-', source.role)}")
        packages.append(package)
        relationships.append(Relationship(image.spdx_id, RelationshipType.GENERATED_FROM, package.spdx_id))
    creation = CreationInfo(
        spdx_version="SPDX-2.3", spdx_id="SPDXRef-DOCUMENT", name=f"{inventory.image.name} (imagebuilder SBOM)",
        document_namespace=f"{NAMESPACE}/{_ID.sub('-', inventory.image.name)}-{inventory.uuid}",
        creators=[Actor(ActorType.TOOL, f"imagebuilder-{__version__}")], created=created.replace(microsecond=0))
    return Document(creation, packages=packages, relationships=relationships,
                    extracted_licensing_info=_extracted(inventory))


def write(inventory: Inventory, path: Path) -> None:
    """Write the SPDX JSON document to path; BuildError if spdx-tools finds it invalid."""
    made = document(inventory)
    problems = validate_full_spdx_document(made)
    if problems:
        raise BuildError(f"the SPDX document is not valid: {problems[0].validation_message}")
    tmp = path.with_name(path.name + ".tmp")
    write_document_to_file(made, str(tmp), validate=False)
    tmp.replace(path)


def _artifact(artifact: Artifact, spdx_id: str) -> Package:
    """An input or the image: a package with its sha256. A location SPDX does not take as a download
    location (a path, a URL of a host without a domain) goes into the comment instead."""
    where = artifact.location if artifact.location and not validate_download_location(artifact.location) else None
    comment = f"imagebuilder role: {artifact.role}" + (
        f"; from {artifact.location}" if artifact.location and where is None else "")
    return Package(spdx_id=spdx_id, name=artifact.name, download_location=where or SpdxNoAssertion(),
                   files_analyzed=False,
                   checksums=[Checksum(ChecksumAlgorithm[artifact.algorithm.upper()], artifact.hex)],
                   primary_package_purpose=_PURPOSES.get(artifact.role), comment=comment)


def _package(installed: InstalledPackage, inventory: Inventory, seen: set[str]) -> Package:
    spdx_id = f"SPDXRef-Package-{_ID.sub('-', installed.key)}"
    while spdx_id in seen:  # two names that reduce to the same characters
        spdx_id += "-1"
    seen.add(spdx_id)
    licence = licences.spdx_licensing().parse(installed.licence, validate=False) if installed.licence else SpdxNoAssertion()
    return Package(
        spdx_id=spdx_id, name=installed.name, version=installed.version or None,
        download_location=SpdxNoAssertion(), files_analyzed=False,
        supplier=_supplier(installed.supplier), homepage=installed.homepage or None,
        source_info=f"built from the source package {installed.source}" + (
            f" {installed.source_version}" if installed.source_version else "") if installed.source else None,
        license_concluded=SpdxNoAssertion(), license_declared=licence, copyright_text=SpdxNoAssertion(),
        summary=installed.summary or None,
        external_references=[ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl",
                                                purl(installed, inventory.os))],
        primary_package_purpose=PackagePurpose.LIBRARY)


def _supplier(text: str) -> Actor | SpdxNoAssertion:
    """"Name <email>" as an SPDX organization (a Debian maintainer is usually a team)."""
    name, email = parseaddr(text)
    name = name or text.strip()
    return Actor(ActorType.ORGANIZATION, name, email or None) if name else SpdxNoAssertion()


def _extracted(inventory: Inventory) -> list[ExtractedLicensingInfo]:
    """A declaration of every LicenseRef- the packages use, with the text the copyright file gives."""
    refs = sorted({ref for package in inventory.packages
                   for ref in re.findall(r"LicenseRef-[A-Za-z0-9.-]+", package.licence or "")})
    return [ExtractedLicensingInfo(
        license_id=ref, license_name=ref.removeprefix("LicenseRef-"),
        extracted_text=inventory.licence_texts.get(ref) or
        f"The licence named '{ref.removeprefix('LicenseRef-')}' in a package's declaration, without a text there.")
        for ref in refs]
