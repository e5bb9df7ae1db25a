"""The domain a recipe describes, as a DomainSpec: shared by the build and `imagebuilder xml`.

No `libvirt` import here: printing the XML needs no daemon.
"""

from __future__ import annotations

import uuid as uuidlib

from imagebuilder import arches, osinfo
from imagebuilder.errors import InputError
from imagebuilder.hardware import generate_mac
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Domain, Recipe
from imagebuilder.units import format_size
from imagebuilder.virt.domainxml import DiskSpec, DomainSpec, NicSpec, domain_xml, validate_xml

SERIAL_LOG_DIR = "/var/log/libvirt/qemu"


def serial_log_path(name: str) -> str:
    """Where the domain's serial console is logged, on the host that runs it."""
    return f"{SERIAL_LOG_DIR}/{name}-serial.log"


def domain_spec(recipe: Recipe, pool: str, volume: str, accel: str, facts: dict[str, str] | None = None,
                serial_log: str | None = None, disk_formats: dict[tuple[str, str], str] | None = None,
                reporter: Reporter | None = None) -> DomainSpec:
    """The DomainSpec of the recipe's [domain] for an image at pool/volume.

    `facts` (from inspection) name the OS for the osinfo metadata unless domain.osinfo does; MACs
    the recipe leaves out are generated, a UUID is always fresh. An image of another architecture
    than this host's runs under TCG whatever `accel` offers.
    """
    accel = arches.domain_accel(recipe.base.arch, accel)
    spec: Domain = recipe.domain
    formats = disk_formats or {}
    disks = [DiskSpec(pool, volume, recipe.disk.format)]
    for data in spec.disks:
        data_pool = data.pool or pool
        disks.append(DiskSpec(data_pool, data.volume,
                              data.format or formats.get((data_pool, data.volume), "raw"), data.bus))
    nics = tuple(NicSpec("network" if nic.network else "bridge", nic.network or nic.bridge or "",
                         nic.mac or generate_mac(), nic.model) for nic in spec.interfaces)
    os_id = spec.osinfo
    short_id = (facts or {}).get("osinfo", "")
    if not os_id and short_id:
        found = osinfo.lookup(short_id)
        os_id = found.id if found else None
        if found and found.minimum_ram and spec.memory < found.minimum_ram and reporter:
            reporter.info(f"warning: libosinfo says {short_id} needs at least {format_size(found.minimum_ram)} "
                          f"of memory; domain.memory is {format_size(spec.memory)}")
    return DomainSpec(
        name=spec.name, memory_bytes=spec.memory, vcpus=spec.vcpus, disks=tuple(disks), nics=nics,
        accel=accel, cpu=spec.cpu, machine=spec.machine, firmware=spec.firmware, graphics=spec.graphics,
        listen=spec.listen, video=spec.video, memballoon=spec.memballoon, rng=spec.rng, agent=spec.agent,
        serial_log=serial_log, osinfo_id=os_id, uuid=str(uuidlib.uuid4()),
        description=f"Built by imagebuilder from {recipe.file.name}",
        labels={"recipe": str(recipe.file.resolve()), "recipe-sha256": recipe.digest}, arch=recipe.base.arch)


def recipe_xml(recipe: Recipe, accel: str) -> str:
    """The domain XML a build of `recipe` would define, checked against libvirt's schema.

    Without a build there are no inspection facts: the osinfo metadata is there only when
    domain.osinfo names the OS, and existing data volumes whose format the recipe leaves out are
    shown as raw (the build reads their real format).
    """
    if recipe.domain is None:
        raise InputError(f"{recipe.file}: the recipe has no [domain] section, so there is no domain XML")
    out = recipe.output
    pool, volume = out.pool, out.current
    if not out.libvirt:
        target = next(t for t in out.targets if t.domain)
        pool, volume = target.pool, target.volume
    xml = domain_xml(domain_spec(recipe, pool, volume, accel, serial_log=serial_log_path(recipe.domain.name)))
    validate_xml(xml)
    return xml
