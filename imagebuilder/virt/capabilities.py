"""Pre-flight checks of a domain spec against what the host's hypervisor can do.

libvirt's domain capabilities (`virsh domcapabilities`) say which machine types, CPU modes,
firmware, and device models a host offers for one accelerator; checking them before a build
turns a define- or start-time failure after many minutes into a message before any work.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from imagebuilder.errors import VirtError
from imagebuilder.virt.domainxml import DomainSpec

def _virt_type(accel: str) -> str:
    return "kvm" if accel == "kvm" else "qemu"


def host_accel(conn: libvirt.virConnect, arch: str = "x86_64") -> str:
    """'kvm' if the host behind `conn` offers KVM for arch, else 'tcg'.

    For hosts other than this one, where imagebuilder cannot boot its KVM probe.
    """
    try:
        conn.getDomainCapabilities(None, arch, None, "kvm", 0)
    except libvirt.libvirtError:
        return "tcg"
    return "kvm"


def machines(conn: libvirt.virConnect, accel: str, arch_name: str = "x86_64") -> list[str]:
    """Machine type names (aliases such as `pc` and `q35` first) for arch_name under `accel`."""
    root = ET.fromstring(conn.getCapabilities())
    names: list[str] = []
    for guest in root.findall("guest"):
        arch = guest.find("arch")
        if arch is None or arch.get("name") != arch_name:
            continue
        for parent in [arch] + [d for d in arch.findall("domain") if d.get("type") == _virt_type(accel)]:
            names += [m.text for m in parent.findall("machine") if m.text and m.text not in names]
    return sorted(names, key=lambda n: (n.count("-"), n))


def check(conn: libvirt.virConnect, spec: DomainSpec) -> str:
    """Raise VirtError naming each recipe key the host cannot honour; return the canonical machine."""
    uri = conn.getURI()
    try:
        caps = ET.fromstring(conn.getDomainCapabilities(None, spec.arch, spec.machine, _virt_type(spec.accel), 0))
    except libvirt.libvirtError as exc:
        known = ", ".join(n for n in machines(conn, spec.accel, spec.arch) if not any(c.isdigit() for c in n))
        if not known:
            raise VirtError(f"{uri} cannot run {spec.arch} machines: {exc.get_error_message()}",
                            hint=f"install the QEMU that emulates {spec.arch} there "
                                 "(qemu-system-arm on Debian, for aarch64)") from None
        raise VirtError(f"domain.machine '{spec.machine}' is not available on {uri}: "
                        f"{exc.get_error_message()} (known: {known}, and versioned ones)") from None
    problems = []
    max_vcpus = caps.find("vcpu")
    if max_vcpus is not None and spec.vcpus > int(max_vcpus.get("max", spec.vcpus)):
        problems.append(f"domain.vcpus {spec.vcpus} is more than machine {spec.machine} "
                        f"takes ({max_vcpus.get('max')})")
    mode = spec.cpu_mode
    if mode == "custom" and spec.cpu_model not in [m.text for m in caps.findall("cpu/mode[@name='custom']/model")]:
        problems.append(f"QEMU on {uri} does not emulate the {spec.arch} CPU model {spec.cpu_model}")
    elif mode and caps.find(f"cpu/mode[@name='{mode}'][@supported='yes']") is None:
        accel = "KVM" if spec.accel == "kvm" else "TCG (no KVM)"
        problems.append(f"domain.cpu '{mode}' is not available with {accel} on {uri}"
                        + ("; use 'maximum' or leave domain.cpu out" if spec.accel == "tcg" else ""))
    if spec.firmware == "efi" and "efi" not in _enum(caps, "os", "firmware"):
        package = "ovmf" if spec.arch == "x86_64" else "qemu-efi-aarch64"
        problems.append(f"domain.firmware 'efi' needs UEFI firmware for {spec.arch} on {uri}, "
                        f"which libvirt does not find (install the {package} package there)")
    for key, kind, enum, wanted in (
            ("domain.graphics", "graphics", "type", {spec.graphics} - {"none"}),
            ("domain.video", "video", "modelType", {spec.video} - {"none"}),
            ("domain.disks bus", "disk", "bus", {disk.bus for disk in spec.disks})):
        offered = _enum(caps, f"devices/{kind}", enum)
        if offered:  # an empty list means libvirt does not say; libvirt will check itself
            problems += [f"{key} '{value}' is not offered on {uri} (offered: {', '.join(offered)})"
                         for value in sorted(wanted) if value not in offered]
    if problems:
        raise VirtError("; ".join(problems))
    return caps.findtext("machine") or spec.machine


def _enum(caps: ET.Element, path: str, name: str) -> list[str]:
    return [value.text or "" for value in caps.findall(f"{path}/enum[@name='{name}']/value")]
