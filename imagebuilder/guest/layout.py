"""Disk layout work in the appliance: a bootable disk from a root tarball, and growing the root partition."""

from __future__ import annotations

from pathlib import Path

from imagebuilder.errors import GuestError
from imagebuilder.guest.context import GuestContext

DEVICE = "/dev/sda"
_GRUB_DEFAULTS = {
    "GRUB_TIMEOUT": "1",
    "GRUB_CMDLINE_LINUX_DEFAULT": '"console=tty0 console=ttyS0,115200n8 net.ifnames=0"',
    "GRUB_TERMINAL": '"console serial"',
    "GRUB_SERIAL_COMMAND": '"serial --speed=115200"',
}
_INTERFACES = """auto lo
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet dhcp
"""


def install_rootfs(ctx: GuestContext, tarball: Path, hostname: str) -> None:
    """Partition the blank disk (MBR, one ext4 root), unpack the tarball, write fstab and install GRUB."""
    g = ctx.g
    g.part_init(DEVICE, "mbr")
    g.part_add(DEVICE, "p", 2048, -1)
    g.part_set_bootable(DEVICE, 1, True)
    root = f"{DEVICE}1"
    g.mkfs("ext4", root)
    g.mount(root, "/")
    ctx.reporter.info("unpacking the root filesystem")
    g.tar_in(str(tarball), "/", xattrs=True, acls=True)
    g.write("/etc/fstab", f"UUID={g.vfs_uuid(root)} / ext4 errors=remount-ro 0 1\n")
    g.write("/etc/hostname", hostname + "\n")
    g.write("/etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    g.write("/etc/network/interfaces", _INTERFACES)
    g.write("/etc/default/grub", _grub_defaults(g.read_file("/etc/default/grub").decode()))
    ctx.reporter.info("installing the GRUB boot loader")
    g.command(["grub-install", "--target=i386-pc", DEVICE])
    g.command(["update-grub"])


def _grub_defaults(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.split("=", 1)[0].strip() not in _GRUB_DEFAULTS]
    lines += [f"{key}={value}" for key, value in _GRUB_DEFAULTS.items()]
    return "\n".join(lines) + "\n"


def expand_root(ctx: GuestContext) -> str:
    """Grow the last partition to the end of the (already enlarged) disk, and its filesystem.

    Like `virt-resize --expand` for the common layout where the root partition is the last one;
    the partition is grown in place, so no data is copied. Returns the expanded partition.
    """
    g = ctx.g
    parts = g.part_list(DEVICE)
    if not parts:
        raise GuestError("the disk has no partition table to expand")
    last = max(parts, key=lambda p: p["part_start"])
    partition = f"{DEVICE}{last['part_num']}"
    fstype = g.vfs_type(partition)
    if fstype not in ("ext2", "ext3", "ext4", "xfs", "btrfs"):
        raise GuestError(f"cannot expand {partition}: it holds '{fstype or 'no filesystem'}', "
                         "and expansion needs the root filesystem on the last partition")
    parttype = g.part_get_parttype(DEVICE)
    sectors = g.blockdev_getsz(DEVICE)
    if parttype == "gpt":
        g.part_expand_gpt(DEVICE)
        end = sectors - 34
    else:
        end = sectors - 1
    g.part_resize(DEVICE, last["part_num"], end)
    if fstype.startswith("ext"):
        g.e2fsck_f(partition)
        g.resize2fs(partition)
    elif fstype == "btrfs":
        g.mount(partition, "/")
        g.btrfs_filesystem_resize("/")
        g.umount("/")
    else:
        g.mount(partition, "/")
        g.xfs_growfs("/")
        g.umount("/")
    return partition
