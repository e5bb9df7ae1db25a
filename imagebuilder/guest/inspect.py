"""libguestfs inspection: find the guest OS and mount its filesystems."""

from __future__ import annotations

from pathlib import Path

from imagebuilder.errors import GuestError
from imagebuilder.guest.context import GuestContext
from imagebuilder.guest.session import IMAGE, Drive, GuestSession


def inspect_and_mount(ctx: GuestContext) -> dict[str, str]:
    """Find the one OS on the image's disk, mount its filesystems, and return its facts (also kept in
    ctx.os). Drives attached beside the image (the bootstrap's root filesystem) are not looked at."""
    g = ctx.g
    roots = [root for root in g.inspect_os() if _on_the_image(g, root)]
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
        "arch": g.inspect_get_arch(root),
    }
    mounts = g.inspect_get_mountpoints(root)
    for mountpoint in sorted(mounts, key=len):
        g.mount(mounts[mountpoint], mountpoint)
    ctx.os.update(facts)
    return facts


def mount_os(g: GuestSession, readonly: bool) -> list[str]:
    """Mount the filesystems of the one OS inspection finds, as `guestmount -i` does (read-only or not);
    return the problems of filesystems that would not mount (skipped, as guestmount skips them)."""
    roots = g.inspect_os()
    if len(roots) != 1:
        raise GuestError("no operating system was found on the image" if not roots else
                         f"the image holds {len(roots)} operating systems; only one is supported")
    problems = []
    mounts = g.inspect_get_mountpoints(roots[0])
    for mountpoint in sorted(mounts, key=len):
        try:
            (g.mount_ro if readonly else g.mount)(mounts[mountpoint], mountpoint)
        except GuestError as exc:
            problems.append(f"{mounts[mountpoint]} on {mountpoint} is left out: {exc.message}")
    return problems


def _on_the_image(g: GuestSession, root: str) -> bool:
    others = {device for label, device in g.list_disk_labels().items() if label != IMAGE}
    try:
        disk = g.part_to_dev(root)
    except GuestError:
        disk = root  # a filesystem on a whole device, or a logical volume
    return disk not in others


def describe_image(path: Path, fmt: str, accel: str) -> dict[str, object]:
    """What inspection finds in an image, opened read-only: partitions, filesystems, operating systems."""
    with GuestSession(Drive(path, fmt, readonly=True), accel, network=False) as g:
        systems = []
        for root in g.inspect_os():
            systems.append({
                "root": root, "type": g.inspect_get_type(root), "distro": g.inspect_get_distro(root),
                "version": f"{g.inspect_get_major_version(root)}.{g.inspect_get_minor_version(root)}",
                "product_name": g.inspect_get_product_name(root), "arch": g.inspect_get_arch(root),
                "hostname": g.inspect_get_hostname(root), "osinfo": g.inspect_get_osinfo(root),
                "package_management": g.inspect_get_package_management(root),
                "mountpoints": g.inspect_get_mountpoints(root),
            })
        return {
            "image": str(path), "format": fmt,
            "partitions": g.list_partitions(),
            "filesystems": {dev: fs for dev, fs in g.list_filesystems().items() if fs != "unknown"},
            "logical_volumes": g.lvs(),
            "operating_systems": systems,
        }
