"""The SBOM as a CycloneDX 1.6 JSON document, made with cyclonedx-python-lib and checked against
its schema; and the packages read back from one (what `versions --diff` compares).

metadata.component is the image (a file with its sha256); the components are the operating system,
every installed package (with its PURL, supplier, licences and source package) and the inputs: the
base image, the recipe and the host files, as files with their sha256.
"""

from __future__ import annotations

import json
from email.utils import parseaddr
from pathlib import Path

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.contact import OrganizationalContact, OrganizationalEntity
from cyclonedx.model.license import LicenseExpression
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from imagebuilder import __version__
from imagebuilder.errors import BuildError, InputError
from imagebuilder.sbom.model import Artifact, Inventory, Package, purl

_ROLE = "imagebuilder:role"
_SOURCE = "imagebuilder:source-package"


def bom(inventory: Inventory) -> Bom:
    """The CycloneDX BOM of an inventory."""
    made = Bom(serial_number=inventory.uuid)
    if inventory.created:
        made.metadata.timestamp = inventory.created
    made.metadata.tools.components.add(Component(name="imagebuilder", version=__version__,
                                                 type=ComponentType.APPLICATION))
    image = _artifact(inventory.image, "image")
    made.metadata.component = image
    system = Component(name=inventory.os.distro, version=inventory.os.version, type=ComponentType.OPERATING_SYSTEM,
                       description=inventory.os.product or None, bom_ref="os")
    made.components.add(system)
    packages = []
    for package in inventory.packages:
        component = _package(package, inventory)
        made.components.add(component)
        packages.append(component)
    for index, source in enumerate(inventory.inputs, 1):
        made.components.add(_artifact(source, f"input-{index}"))
    made.register_dependency(image, [system])
    made.register_dependency(system, packages)
    return made


def write(inventory: Inventory, path: Path) -> None:
    """Write the CycloneDX JSON document to path; BuildError if the 1.6 schema rejects it."""
    text = JsonV1Dot6(bom(inventory)).output_as_string(indent=2)
    problem = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if problem is not None:
        raise BuildError(f"the CycloneDX document is not valid: {problem}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)


def _artifact(artifact: Artifact, ref: str) -> Component:
    return Component(name=artifact.name, type=ComponentType.FILE, bom_ref=ref,
                     hashes=[HashType(alg=HashAlgorithm(artifact.algorithm.upper().replace("SHA", "SHA-")),
                                      content=artifact.hex)],
                     description=f"from {artifact.location}" if artifact.location else None,
                     properties=[Property(name=_ROLE, value=artifact.role)])


def _package(package: Package, inventory: Inventory) -> Component:
    locator = purl(package, inventory.os)
    name, email = parseaddr(package.supplier)
    name = name or package.supplier.strip()
    supplier = OrganizationalEntity(name=name, contacts=[OrganizationalContact(email=email)] if email else None) \
        if name else None
    properties = [Property(name=_SOURCE, value=package.source + (f" {package.source_version}"
                                                                  if package.source_version else ""))] \
        if package.source else []
    return Component(name=package.name, version=package.version or None, type=ComponentType.LIBRARY,
                     bom_ref=locator, purl=PackageURL.from_string(locator), supplier=supplier,
                     description=package.summary or None,
                     licenses=[LicenseExpression(package.licence)] if package.licence else None,
                     properties=properties)


def read_packages(path: Path) -> list[Package]:
    """The packages a CycloneDX JSON SBOM lists (the components with a PURL), for comparing two SBOMs."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the SBOM {path}: {exc}") from None
    packages = []
    for component in data.get("components", []):
        if not component.get("purl"):
            continue
        locator = PackageURL.from_string(component["purl"])
        properties = {p.get("name"): p.get("value", "") for p in component.get("properties", [])}
        packages.append(Package(name=component.get("name", locator.name), version=component.get("version", ""),
                                arch=(locator.qualifiers or {}).get("arch", ""),
                                source=properties.get(_SOURCE, "").split(" ")[0]))
    return packages
