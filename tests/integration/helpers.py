"""Small helpers shared by the integration tests."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path


def unique(kind: str) -> str:
    """A random name for a throwaway libvirt object."""
    return f"ibtest-{kind}-{secrets.token_hex(4)}"


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sbom_packages(path: Path) -> set[tuple[str, str]]:
    """(name:arch, version) of every package a CycloneDX SBOM lists."""
    data = json.loads(path.read_text())
    return {(f"{c['name']}:{c['purl'].split('arch=')[1].split('&')[0]}", c["version"])
            for c in data["components"] if c.get("purl")}


def peer_libguestfs_env() -> dict[str, str]:
    """Environment for libguestfs's own tools (virt-customize, virt-builder): they have no boot
    watchdog, so they run under TCG wherever imagebuilder's verdict says KVM does not work."""
    from imagebuilder import accel
    return {"LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"} if accel.choose("auto") == "tcg" else {}


def appliance_launches(log: Path) -> list[str]:
    """The arguments of each appliance qemu a qemu_logger log shows (not the KVM probe's kernel boot)."""
    lines = log.read_text().splitlines() if log.exists() else []
    return [args for args in lines if " -kernel " in args and "appliance.d" in args]


def each_guest(images, look) -> list:
    """look(g) for each image's guest, in the order given, in one read-only appliance."""
    import guestfs
    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend_settings(["force_tcg"])
    for image in images:
        g.add_drive_opts(str(image), format="qcow2", readonly=True)
    g.launch()
    try:
        results = []
        roots = sorted(g.inspect_os())
        assert [r[:8] for r in roots] == [f"/dev/sd{chr(ord('a') + n)}" for n in range(len(images))]
        for root in roots:
            g.mount_ro(root, "/")  # by device: images of one base have its UUIDs, which fstab names
            results.append(look(g))
            g.umount_all()
    finally:
        g.close()
    return results
