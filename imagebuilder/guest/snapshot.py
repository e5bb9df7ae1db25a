"""Images read without changing them, in one appliance launch: their OS and packages (for
`imagebuilder sbom`), and for `imagebuilder diff` two images side by side, with the checksums of
the files under a few directories (/etc by default).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagebuilder.errors import GuestError, InputError
from imagebuilder.guest.inventory import read_packages
from imagebuilder.guest.session import Drive, GuestSession, label
from imagebuilder.sbom.model import OperatingSystem, Package


@dataclass
class Snapshot:
    """What one image holds: its OS, packages, the LicenseRef- texts, and {path: sha256} of files."""

    os: OperatingSystem
    packages: list[Package]
    licence_texts: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


def read_images(images: list[Path], fmt: str, accel: str, file_dirs: tuple[str, ...] = ()) -> list[Snapshot]:
    """A snapshot of each image (all of one format), all read in a single read-only launch."""
    drives = [Drive(image, fmt, label("image", index), readonly=True) for index, image in enumerate(images, 1)]
    with GuestSession(drives, accel, network=False) as g:
        roots = g.inspect_os()
        disks = [g.device(drive.label) for drive in drives]
        found = []
        for disk, image in zip(disks, images):
            root = _root_on(g, roots, disk, image)
            _mount(g, root, disk)
            system, packages, texts = read_packages(g, root)
            files = {}
            for directory in file_dirs:
                files.update(_checksums(g, directory))
            g.umount_all()
            found.append(Snapshot(system, packages, texts, files))
        return found


def _root_on(g: Any, roots: list[str], disk: str, image: Path) -> str:
    """The one OS root on disk: images of logical volumes or of several systems are not compared."""
    mine = [root for root in roots if _disk_of(g, root) == disk]
    if len(mine) != 1:
        raise InputError(f"{image}: found {len(mine)} operating systems on its own partitions; "
                         "an image with exactly one is needed (LVM roots are not supported here)")
    return mine[0]


def _disk_of(g: Any, device: str) -> str:
    """The disk a partition is on; any other device (a whole disk, a logical volume) stands for itself."""
    try:
        return g.part_to_dev(device)
    except GuestError:
        return device


def _mount(g: Any, root: str, disk: str) -> None:
    """Mount root read-only, and its other filesystems that lie on the same disk (two versions of an
    image share filesystem UUIDs, so /etc/fstab may point at the other image's partition)."""
    mounts = g.inspect_get_mountpoints(root)
    for mountpoint in sorted(mounts, key=len):
        device = root if mountpoint == "/" else mounts[mountpoint]
        if mountpoint == "/" or _disk_of(g, device) == disk:
            try:
                g.mount_ro(device, mountpoint)
            except GuestError:
                if mountpoint == "/":
                    raise


def _checksums(g: Any, directory: str) -> dict[str, str]:
    """{path: sha256} of every regular file under directory (one call: checksums_out)."""
    if not g.is_dir(directory):
        return {}
    with tempfile.TemporaryDirectory(prefix="imagebuilder-diff-") as tmp:
        listing = Path(tmp) / "sums"
        g.checksums_out("sha256", directory, str(listing))
        found = {}
        for line in listing.read_text(errors="replace").splitlines():
            digest, _, name = line.partition("  ")
            if name:
                found[directory.rstrip("/") + "/" + name.removeprefix("./")] = digest
        return found
