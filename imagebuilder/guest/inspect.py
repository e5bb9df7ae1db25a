"""libguestfs inspection: find the guest OS and mount its filesystems."""

from __future__ import annotations

from imagebuilder.errors import GuestError
from imagebuilder.guest.context import GuestContext


def inspect_and_mount(ctx: GuestContext) -> dict[str, str]:
    """Find the one OS on the disk, mount its filesystems, and return its facts (also kept in ctx.os)."""
    g = ctx.g
    roots = g.inspect_os()
    if not roots:
        raise GuestError("no operating system was found on the base image")
    if len(roots) > 1:
        raise GuestError(f"the base image holds {len(roots)} operating systems; only one is supported")
    root = roots[0]
    facts = {
        "root": root,
        "type": g.inspect_get_type(root),
        "distro": g.inspect_get_distro(root),
        "version": f"{g.inspect_get_major_version(root)}.{g.inspect_get_minor_version(root)}",
        "product_name": g.inspect_get_product_name(root),
        "package_management": g.inspect_get_package_management(root),
        "osinfo": g.inspect_get_osinfo(root),
    }
    mounts = g.inspect_get_mountpoints(root)
    for mountpoint in sorted(mounts, key=len):
        g.mount(mounts[mountpoint], mountpoint)
    ctx.os.update(facts)
    return facts
