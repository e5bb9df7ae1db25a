"""libvirt networks: find one, make the standard `default` NAT network when it is missing, remove."""

from __future__ import annotations

import libvirt

from imagebuilder.errors import VirtError
from imagebuilder.virt.domainxml import default_network_xml
from imagebuilder.virt.lookup import NO_NETWORK, lookup_or_none, virt_error


def network_exists(conn: libvirt.virConnect, name: str) -> bool:
    """True if network `name` is defined (active or not)."""
    return lookup_or_none(conn.networkLookupByName, name, NO_NETWORK, "network") is not None


def check_network(conn: libvirt.virConnect, name: str) -> None:
    """Before any work: network `name` must exist, unless it is `default`, which we can make."""
    if name != "default" and not network_exists(conn, name):
        known = ", ".join(sorted(n.name() for n in conn.listAllNetworks())) or "none"
        raise VirtError(f"network {name} does not exist on {conn.getURI()} (existing networks: {known})",
                        hint="define it with `virsh net-define`, or name another one in domain.network")


def ensure_network(conn: libvirt.virConnect, name: str) -> bool:
    """Make network `name` active; create `default` if missing. True if it was created."""
    net = lookup_or_none(conn.networkLookupByName, name, NO_NETWORK, "network")
    created = False
    if net is None:
        if name != "default":
            raise VirtError(f"network {name} does not exist")
        try:
            net = conn.networkDefineXML(default_network_xml())
            net.setAutostart(1)
        except libvirt.libvirtError as exc:
            raise virt_error("cannot define the default network", exc) from None
        created = True
    try:
        if not net.isActive():
            net.create()
    except libvirt.libvirtError as exc:
        if created:
            remove_network(conn, name)
        raise virt_error(f"cannot start network {name}", exc) from None
    return created


def remove_network(conn: libvirt.virConnect, name: str) -> bool:
    """Stop and undefine network `name`; True if it existed."""
    try:
        net = conn.networkLookupByName(name)
        if net.isActive():
            net.destroy()
        if net.isPersistent():
            net.undefine()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return False
        raise virt_error(f"cannot remove network {name}", exc) from None
    return True
