"""A fleet: [[machines]] or [fleet], each machine a clone of the golden image with [domain] as its template."""

from __future__ import annotations

import dataclasses
import re

from imagebuilder import hardware, units, values
from imagebuilder.recipe.domain import data_disks
from imagebuilder.recipe.model import Domain, Interface, Machine, Output
from imagebuilder.recipe.tables import Loader, Table, check_name

_FLEET_PATTERN = re.compile(r"^[^{}]*\{n(?::0[1-9])?\}[^{}]*$")


def parse_fleet(top: Table, loader: Loader, domain: Domain | None, image: str, output: Output) -> tuple[Machine, ...]:
    """The machines of [[machines]] or [fleet]: [domain] (or its defaults) with each one's overrides."""
    listed = top.get("machines", list)
    fleet = top.table("fleet")
    if listed is None and fleet is None:
        return ()
    if listed is not None and fleet is not None:
        raise loader.error(("fleet",), "[fleet] and [[machines]] exclude each other; keep one")
    where: tuple[str | int, ...] = ("machines",) if listed is not None else ("fleet",)
    if not output.libvirt:
        raise loader.error(where, "the machines of a fleet are overlays of the golden volume: [output] needs a "
                                  "libvirt pool, not only a file")
    if output.alias:
        raise loader.error(("output", "volume"), "the machines of a fleet are overlays of one golden volume: "
                                                 f"give it a fixed name, not the template '{output.volume}'")
    for index, target in enumerate(output.targets):
        if target.domain:
            raise loader.error(("output", "targets", index, "domain"),
                               "the machines of a fleet are made on the [output] host only")
    if "name" in (top.data.get("domain") or {}):
        raise loader.error(("domain", "name"), "with a fleet each machine has its own name; remove domain.name")
    template = domain or Domain(name=image)
    for index, data in enumerate(template.disks):
        if data.size is None:
            raise loader.error(("domain", "disks", index), f"volume {data.volume} cannot be attached to every "
                                                           "machine; attach it in one [[machines]] entry")
    if listed is not None:
        machines = [_machine(table, template) for table in top.tables("machines")]
        if not machines:
            raise loader.error(where, "no machines: add at least one [[machines]] entry")
    else:
        machines = _fleet_machines(fleet, template)
    names: dict[str, int] = {}
    macs: dict[str, str] = {}
    for index, machine in enumerate(machines):
        at = where + ((index, "name") if listed is not None else ("name",))
        if machine.name in names:
            raise loader.error(at, f"machine name '{machine.name}' is used twice")
        names[machine.name] = index
        if machine.overlay == output.volume:
            raise loader.error(at, f"the overlay of machine '{machine.name}' would be {machine.overlay}, the golden "
                                   "volume itself; rename the machine or [output] volume")
        for nic in machine.domain.interfaces:
            if nic.mac and nic.mac in macs:
                raise loader.error(where + ((index, "mac") if listed is not None else ()),
                                   f"MAC address {nic.mac} is used by {macs[nic.mac]} as well; "
                                   "each machine needs its own (leave it out to have one generated)")
            if nic.mac:
                macs[nic.mac] = machine.name
    return tuple(machines)


def _machine(table: Table, template: Domain) -> Machine:
    """One [[machines]] entry: name, hostname and overrides of [domain]."""
    name = table.convert("name", str, check_name)
    if name is None:
        raise table.error(None, "missing required key 'name'")
    hostname = table.convert("hostname", str, values.hostname)
    if hostname is None:
        try:
            hostname = values.hostname(name)
        except ValueError:
            raise table.error("name", f"'{name}' is not a valid host name; add hostname = \"…\"") from None
    domain = _machine_domain(table, template, name)
    line = table.loader.line(table.path + ("name",))
    table.finish()
    return Machine(name, hostname, domain, line)


def _machine_domain(table: Table | None, template: Domain, name: str) -> Domain:
    """[domain] for one machine: its name, its own new data disks, and the entry's overrides."""
    disks = tuple(dataclasses.replace(disk, volume=f"{name}-disk{number}.{disk.format or 'qcow2'}")
                  for number, disk in enumerate(template.disks, 1))
    if table is None:
        return dataclasses.replace(template, name=name, disks=disks)
    memory = table.convert("memory", (str, int), units.parse_size, template.memory)
    if memory < 64 << 20:
        raise table.error("memory", "must be at least 64M")
    vcpus = table.get("vcpus", int, template.vcpus)
    if not 1 <= vcpus <= 512:
        raise table.error("vcpus", "must be between 1 and 512")
    interfaces = template.interfaces
    network = table.get("network", str)
    if network == "none":
        interfaces = ()
    elif network is not None:
        network = table.convert("network", str, check_name)
        interfaces = (Interface(network=network, model=interfaces[0].model if interfaces else "virtio"),)
    mac = table.convert("mac", str, hardware.check_mac)
    if mac is not None:
        if not interfaces:
            raise table.error("mac", "the machine has no network interface (network = \"none\")")
        interfaces = (dataclasses.replace(interfaces[0], mac=mac),) + interfaces[1:]
    if template.wait == "ssh" and not interfaces:
        raise table.error("network", "[domain] waits for SSH, which needs a network interface")
    if "disks" in table.data:
        disks = data_disks(table, name)
    return dataclasses.replace(template, name=name, memory=memory, vcpus=vcpus, interfaces=interfaces, disks=disks)


def _fleet_machines(fleet: Table, template: Domain) -> list[Machine]:
    """[fleet] count = N, name = "web-{n}": N machines numbered from `first` (default 1)."""
    count = fleet.get("count", int, required=True)
    if not 1 <= count <= 1000:
        raise fleet.error("count", "must be between 1 and 1000")
    pattern = fleet.get("name", str, f"{template.name}-{{n}}")
    if not _FLEET_PATTERN.match(pattern):
        raise fleet.error("name", f"'{pattern}' needs one {{n}} (or {{n:02}} for 01, 02 …), as in \"web-{{n}}\"")
    first = fleet.get("first", int, 1)
    if first < 0:
        raise fleet.error("first", "must be 0 or more")
    fleet.finish()
    line = fleet.loader.line(("fleet", "count"))
    machines = []
    for number in range(first, first + count):
        name = pattern.format(n=number)
        try:
            check_name(name)
            hostname = values.hostname(name)
        except ValueError as exc:
            raise fleet.error("name", f"machine {number}: {exc}") from None
        machines.append(Machine(name, hostname, _machine_domain(None, template, name), line))
    return machines
