"""Offline personalization of clones: every overlay in ONE libguestfs appliance.

Each clone gets what must differ between machines made from one image: an empty machine-id
(systemd makes a new one at first boot), no SSH host keys (made anew right before sshd first
starts, see sysprep's ssh-hostkeys), its host name; then the steps asked for. Only the overlays
are written: qemu opens their backing file, the golden image, read-only.

Overlays of one image carry the same filesystem UUIDs, so the UUID= lines of fstab cannot tell
their filesystems apart, and libguestfs inspection would inspect every filesystem of every clone
(seconds each under TCG). So only the first disk is looked at: its root filesystem (the one with
/etc/fstab and os-release), its fstab resolved against its own partitions, and the mount points
mapped onto the other disks by partition number (every clone has the golden image's partition
table). A layout that cannot be mapped that way (LVM, whose duplicate physical volumes confuse the
appliance) falls back to one launch per clone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from imagebuilder.arches import Arch
from imagebuilder.errors import GuestError
from imagebuilder.guest import passwords, sysprep
from imagebuilder.guest.context import GuestContext
from imagebuilder.guest.customize import in_order, relabels, selinux_relabel
from imagebuilder.guest.inspect import inspect_and_mount
from imagebuilder.guest.ops import REGISTRY
from imagebuilder.guest.session import Drive, GuestSession, label
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Step

IDENTITY = ("machine-id", "ssh-hostkeys")


@dataclass(frozen=True)
class CloneDisk:
    """One clone's overlay and what to do to it."""

    path: Path
    name: str
    hostname: str | None = None
    steps: tuple[Step, ...] = ()


class _Unmappable(Exception):
    """The first clone's mount points are not plain partitions: one launch per clone instead."""


def personalize(clones: list[CloneDisk], accel: str, reporter: Reporter, network: bool = False,
                emulate: Arch | None = None) -> int:
    """Reset the identity of every clone, set its host name, apply its steps; return the number of
    appliance launches (1, unless the layout needs one per clone). With `emulate`, the clones are of
    that foreign architecture (see guest/emulation.py)."""
    if not clones:
        return 0
    names = ", ".join(clone.name for clone in clones)
    reporter.info(f"personalizing {names} in one libguestfs appliance ({accel}{', network on' if network else ''})")
    try:
        drives = [Drive(clone.path, "qcow2", label("clone", index)) for index, clone in enumerate(clones, 1)]
        with GuestSession(drives, accel, network, say=reporter.info, emulate=emulate) as g:
            devices = [g.device(drive.label) for drive in drives]
            layout, facts = _layout(g, devices)
            for device, clone in zip(devices, clones):
                _mount(g, device, layout)
                _apply(GuestContext(g, reporter, os=dict(facts)), clone)
                g.umount_all()
        return 1
    except _Unmappable as exc:
        reporter.info(f"{exc}: libguestfs inspection instead, one appliance per clone")
    for clone in clones:
        with GuestSession(Drive(clone.path, "qcow2"), accel, network, say=reporter.info, emulate=emulate) as g:
            ctx = GuestContext(g, reporter)
            inspect_and_mount(ctx)
            _apply(ctx, clone)
            g.umount_all()
    return 1 + len(clones)


def _layout(g, devices: list[str]) -> tuple[dict[str, int | None], dict[str, str]]:  # noqa: ANN001
    """Mount point -> partition number (None: the whole disk) of the OS on the first disk, and its facts.

    Only the first disk is looked at: libguestfs inspection would inspect every filesystem of every
    clone (seconds each under TCG), and they are all the same.
    """
    first = devices[0]
    own = {}  # list_filesystems would probe every device of every clone: seconds each under TCG
    for device in [p for p in g.list_partitions() if re.fullmatch(re.escape(first) + r"\d+", p)] or [first]:
        try:
            kind = g.vfs_type(device)
        except GuestError:
            continue
        if kind and kind not in ("swap", "unknown") and not kind.endswith("_member"):
            own[device] = kind
    for fs in own:
        try:
            g.mount_ro(fs, "/")
        except GuestError:
            continue
        try:
            fstab = g.read_file("/etc/fstab").decode(errors="replace") if g.is_file("/etc/fstab") else None
            release = next((g.read_file(p).decode(errors="replace") for p in ("/etc/os-release", "/usr/lib/os-release")
                            if g.is_file(p, followsymlinks=True)), None)
        finally:
            g.umount_all()
        if fstab is not None and release is not None:
            layout = {"/": _number(g, fs, first)}
            for spec, mountpoint in _fstab_mounts(fstab):
                device = _resolve(g, spec, own, first)
                if device is None:
                    raise _Unmappable(f"{mountpoint} is on {spec}, which is not a partition of the first clone")
                layout[mountpoint] = _number(g, device, first)
            return layout, _facts(fs, release)
    raise _Unmappable("no partition of the first clone holds /etc/fstab and os-release")


def _number(g, device: str, disk: str) -> int | None:  # noqa: ANN001
    return None if device == disk else g.part_to_partnum(device)


_SKIP_TYPES = {"swap", "proc", "sysfs", "tmpfs", "devpts", "devtmpfs", "cgroup", "cgroup2", "none", "nfs", "nfs4",
               "cifs", "securityfs", "debugfs", "efivarfs", "bind"}


def _fstab_mounts(text: str) -> list[tuple[str, str]]:
    """(device spec, mount point) of the fstab lines that mount a local filesystem, other than /."""
    found = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 3 or not fields[1].startswith("/") or fields[1] == "/" or fields[2] in _SKIP_TYPES:
            continue
        if len(fields) > 3 and "bind" in fields[3].split(","):
            continue
        found.append((fields[0], fields[1]))
    return found


def _resolve(g, spec: str, filesystems: dict[str, str], disk: str) -> str | None:  # noqa: ANN001
    """The first clone's device an fstab spec names (UUID=, LABEL=, PARTUUID=, PARTLABEL=, by-* links, /dev/xdaN)."""
    key, _, value = spec.partition("=")
    for prefix, tag in (("/dev/disk/by-uuid/", "UUID"), ("/dev/disk/by-label/", "LABEL"),
                        ("/dev/disk/by-partuuid/", "PARTUUID"), ("/dev/disk/by-partlabel/", "PARTLABEL")):
        if spec.startswith(prefix):
            key, value = tag, spec[len(prefix):]
    if key in ("UUID", "LABEL", "PARTUUID", "PARTLABEL") and value:
        for fs in filesystems:
            if g.blkid(fs).get(key, "").lower() == value.strip('"').lower():
                return fs
        return None
    match = re.match(r"^/dev/(?:[shv]d[a-z]|xvd[a-z])(\d+)$", spec)
    return f"{disk}{match.group(1)}" if match else None


_MANAGERS = (("debian", "apt"), ("ubuntu", "apt"), ("fedora", "dnf"), ("rhel", "dnf"), ("centos", "dnf"),
             ("rocky", "dnf"), ("almalinux", "dnf"), ("suse", "zypper"), ("opensuse", "zypper"), ("sles", "zypper"),
             ("alpine", "apk"), ("arch", "pacman"))


def _facts(root: str, release: str) -> dict[str, str]:
    """What the operations need to know of the OS (its package manager), from os-release."""
    values = {}
    for line in release.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"').strip("'")
    ids = [values.get("ID", "")] + values.get("ID_LIKE", "").split()
    manager = next((m for want in ids for name, m in _MANAGERS if want == name), "unknown")
    if manager == "dnf" and values.get("VERSION_ID", "").split(".")[0] in ("5", "6", "7"):
        manager = "yum"
    return {"root": root, "type": "linux", "distro": values.get("ID", "unknown"),
            "version": values.get("VERSION_ID", ""), "product_name": values.get("PRETTY_NAME", ""),
            "package_management": manager}


def _mount(g, device: str, layout: dict[str, int | None]) -> None:  # noqa: ANN001
    for mountpoint in sorted(layout, key=len):
        number = layout[mountpoint]
        g.mount(device if number is None else f"{device}{number}", mountpoint)


def _apply(ctx: GuestContext, clone: CloneDisk) -> None:
    cryptos = [step.arg for step in clone.steps if step.op == "password_crypto"]
    ctx.state["password_crypto"] = cryptos[-1] if cryptos else passwords.DEFAULT_CRYPTO
    what = [*IDENTITY] + ([f"hostname {clone.hostname}"] if clone.hostname else []) + \
        [step.describe() for step in clone.steps]
    ctx.reporter.info(f"{clone.name}: {'; '.join(what)}")
    try:
        sysprep.apply(ctx, list(IDENTITY))
        if clone.hostname:
            REGISTRY["hostname"].apply(ctx, clone.hostname)
        for number, step in in_order(clone.steps):
            try:
                REGISTRY[step.op].apply(ctx, step.arg)
            except GuestError as exc:
                raise GuestError(f"step {number} '{step.op}' failed: {exc.message}", hint=exc.hint) from None
        if relabels(clone.steps):
            selinux_relabel(ctx)
    except GuestError as exc:
        raise GuestError(f"clone {clone.name}: {exc.message}", hint=exc.hint) from None
