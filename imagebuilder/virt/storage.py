"""Storage pools and volumes: find or create a pool, publish an image into it as a volume."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import libvirt

from imagebuilder import files
from imagebuilder.errors import BuildError, InputError, VirtError
from imagebuilder.run import run
from imagebuilder.virt.connection import is_local
from imagebuilder.virt.lookup import NO_POOL, NO_VOLUME, lookup_or_none, virt_error

log = logging.getLogger(__name__)


def ensure_pool(conn: libvirt.virConnect, name: str, default_path: str = "/var/lib/libvirt/images",
                ) -> tuple[libvirt.virStoragePool, bool]:
    """Return (pool, created): start an existing pool, or create the `default` dir pool."""
    pool = lookup_or_none(conn.storagePoolLookupByName, name, NO_POOL, "storage pool")
    if pool is None:
        if name == "default":
            return create_dir_pool(conn, name, default_path), True
        known = ", ".join(sorted(p.name() for p in conn.listAllStoragePools())) or "none"
        raise VirtError(f"storage pool {name} does not exist (existing pools: {known})")
    try:
        if not pool.isActive():
            pool.create(0)
    except libvirt.libvirtError as exc:
        raise virt_error(f"cannot start storage pool {name}", exc) from None
    return pool, False


def find_pool(conn: libvirt.virConnect, name: str) -> libvirt.virStoragePool | None:
    """The pool `name`, refreshed, or None if there is none."""
    pool = lookup_or_none(conn.storagePoolLookupByName, name, NO_POOL, "storage pool")
    if pool is None:
        return None
    try:
        pool.refresh(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return None  # undefined since the lookup
        raise virt_error(f"cannot look up storage pool {name}", exc) from None
    return pool


def create_dir_pool(conn: libvirt.virConnect, name: str,
                    path: str | Path) -> libvirt.virStoragePool:
    """Define, build, start and autostart a directory pool at `path`."""
    root = ET.Element("pool", type="dir")
    ET.SubElement(root, "name").text = name
    ET.SubElement(ET.SubElement(root, "target"), "path").text = str(path)
    try:
        pool = conn.storagePoolDefineXML(ET.tostring(root, encoding="unicode"), 0)
    except libvirt.libvirtError as exc:
        raise virt_error(f"cannot define storage pool {name} at {path}", exc) from None
    try:
        pool.build(0)
        pool.create(0)
        pool.setAutostart(1)
    except libvirt.libvirtError as exc:
        remove_pool(conn, name)
        raise virt_error(f"cannot start storage pool {name} at {path}", exc) from None
    return pool


def remove_pool(conn: libvirt.virConnect, name: str) -> bool:
    """Stop and undefine pool `name`, leaving its directory as it is; True if it existed."""
    try:
        pool = conn.storagePoolLookupByName(name)
        if pool.isActive():
            pool.destroy()
        pool.undefine()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return False
        raise virt_error(f"cannot remove storage pool {name}", exc) from None
    return True


def _pool_type_and_path(pool: libvirt.virStoragePool) -> tuple[str, Path | None]:
    root = ET.fromstring(pool.XMLDesc(0))
    path = root.findtext("target/path")
    return root.get("type", ""), Path(path) if path else None


def local_target_dir(conn: libvirt.virConnect, pool: libvirt.virStoragePool) -> Path | None:
    """The pool's directory when files written there become its volumes (local dir/fs pool)."""
    kind, path = _pool_type_and_path(pool)
    return path if kind in ("dir", "fs") and is_local(conn) else None


def refresh_pool(pool: libvirt.virStoragePool) -> None:
    """Have libvirt read the pool's volumes again (after files in its directory changed)."""
    try:
        pool.refresh(0)
    except libvirt.libvirtError as exc:
        raise VirtError(f"cannot refresh pool {pool.name()}: {exc.get_error_message()}") from None


def find_volume(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    """The volume `name` of the pool (as of its last refresh), or None if there is none."""
    return lookup_or_none(pool.storageVolLookupByName, name, NO_VOLUME, "volume")


def volume_exists(pool: libvirt.virStoragePool, name: str) -> bool:
    """True if the pool holds a volume `name` (as of the pool's last refresh)."""
    return find_volume(pool, name) is not None


def volume_exists_in(conn: libvirt.virConnect, pool_name: str, name: str) -> bool:
    """Whether pool `pool_name` exists and holds volume `name` (a missing pool is no error here;
    any other failure is, since it tells nothing)."""
    pool = find_pool(conn, pool_name)
    return pool is not None and volume_exists(pool, name)


def volume_format(pool: libvirt.virStoragePool, name: str) -> str:
    """The format libvirt reports for volume `name` (raw, qcow2, …)."""
    try:
        xml = pool.storageVolLookupByName(name).XMLDesc(0)
    except libvirt.libvirtError as exc:
        raise virt_error(f"cannot look up volume {name}", exc) from None
    found = ET.fromstring(xml).find("target/format")
    return found.get("type", "raw") if found is not None else "raw"


def check_volume_name(name: str) -> None:
    """Raise InputError if `name` cannot be a volume (file) name."""
    problem = None
    if not name:
        problem = "is empty"
    elif "/" in name or "\0" in name:
        problem = "must not contain '/' or NUL"
    elif name.startswith("."):
        problem = "must not start with '.'"
    elif len(name.encode()) > 255:
        problem = "is longer than 255 bytes"
    if problem:
        raise InputError(f"volume name {name!r} {problem}")


def delete_volume(pool: libvirt.virStoragePool, name: str) -> bool:
    """Delete volume `name` from the pool; True if it existed."""
    try:
        pool.storageVolLookupByName(name).delete(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return False
        raise virt_error(f"cannot delete volume {name} from pool {pool.name()}", exc) from None
    return True


def _refuse_existing(pool: libvirt.virStoragePool, name: str, exists: bool) -> None:
    if exists:
        raise BuildError(f"volume {name} already exists in pool {pool.name()} "
                         "(use --force to replace it)")


def adopt_file(pool: libvirt.virStoragePool, tmp_path: Path, name: str,
               force: bool) -> libvirt.virStorageVol:
    """Make `tmp_path`, a file in the pool's directory, the volume `name` by an atomic rename."""
    check_volume_name(name)
    _, target = _pool_type_and_path(pool)
    if target is None or tmp_path.parent.resolve() != target.resolve():
        raise BuildError(f"{tmp_path} is not in the directory of pool {pool.name()} ({target})")
    final = target / name
    if not force:
        _refuse_existing(pool, name, final.exists() or volume_exists(pool, name))
    try:  # atomic: with --force there is never a moment without a volume `name`; without it, a
        # volume that appeared since the check (another build of the same recipe) is never overwritten
        files.place(tmp_path, final, replace=force)
    except FileExistsError:
        _refuse_existing(pool, name, True)
    except OSError as exc:
        raise BuildError(f"cannot rename {tmp_path} to {final}: {exc.strerror}") from None
    try:
        pool.refresh(0)
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        raise virt_error(f"cannot find volume {name} in pool {pool.name()}", exc) from None


def _image_size(src: Path, fmt: str) -> int:
    info = json.loads(run(["qemu-img", "info", "-f", fmt, "--output=json", str(src)]).stdout)
    if info.get("backing-filename"):
        raise BuildError(f"{src} has a backing file ({info['backing-filename']}); "
                         "convert it to a standalone image before uploading")
    return int(info["virtual-size"])


def _volume_xml(name: str, capacity: int, fmt: str) -> str:
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="bytes").text = str(capacity)
    ET.SubElement(root, "allocation", unit="bytes").text = "0"
    ET.SubElement(ET.SubElement(root, "target"), "format", type=fmt)
    return ET.tostring(root, encoding="unicode")


def _section(_stream: libvirt.virStream, fd: int) -> tuple[bool, int]:
    """sparseSendAll's hole handler: (in_data, length) of the section starting at fd's offset."""
    cur = os.lseek(fd, 0, os.SEEK_CUR)
    end = os.fstat(fd).st_size
    if cur >= end:
        return True, 0
    try:
        data = os.lseek(fd, cur, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise
        data = end  # only a hole remains up to the end of the file
    if data > cur:
        result = (False, data - cur)
    else:
        result = (True, os.lseek(fd, cur, os.SEEK_HOLE) - cur)
    os.lseek(fd, cur, os.SEEK_SET)
    return result


def create_volume(pool: libvirt.virStoragePool, name: str, capacity: int, fmt: str) -> libvirt.virStorageVol:
    """A new, empty (thin) volume: a data disk."""
    check_volume_name(name)
    try:
        return pool.createXML(_volume_xml(name, capacity, fmt), 0)
    except libvirt.libvirtError as exc:
        raise virt_error(f"cannot create volume {name} in pool {pool.name()}", exc) from None


class Cancelled(Exception):
    """An upload stopped because another part of the build failed."""


def upload_file(conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, src: Path,
                fmt: str, force: bool, advance: Callable[[int], None] | None = None,
                cancel: threading.Event | None = None, sparse: bool = True) -> libvirt.virStorageVol:
    """Create volume `name` in format `fmt` and send the bytes of `src` into it as a sparse stream.

    Holes of `src` are sent as holes: `advance` (if given) is called with the size of each chunk of
    allocated bytes sent. Setting `cancel` stops the upload (Cancelled). On any failure the stream is aborted and the
    new volume deleted. `sparse=False` sends every byte (for comparison in bench/upload.py).
    """
    check_volume_name(name)
    capacity = _image_size(src, fmt)
    if force:
        delete_volume(pool, name)
    else:
        _refuse_existing(pool, name, volume_exists(pool, name))
    stream = conn.newStream(0)
    try:
        vol = pool.createXML(_volume_xml(name, capacity, fmt), 0)
    except libvirt.libvirtError as exc:
        raise virt_error(f"cannot create volume {name} in pool {pool.name()}", exc) from None

    def send(_stream: libvirt.virStream, nbytes: int, fd: int) -> bytes:
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"upload of {name} cancelled")
        data = os.read(fd, nbytes)
        if advance is not None:
            advance(len(data))
        return data

    def skip(_stream: libvirt.virStream, length: int, fd: int) -> int:
        return os.lseek(fd, length, os.SEEK_CUR)

    try:
        with open(src, "rb", buffering=0) as file:
            if sparse:
                vol.upload(stream, 0, 0, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
                stream.sparseSendAll(send, _section, skip, file.fileno())
            else:
                vol.upload(stream, 0, 0, 0)
                stream.sendAll(send, file.fileno())
            stream.finish()
    except BaseException as exc:
        _discard(stream, vol)
        if isinstance(exc, libvirt.libvirtError):
            raise virt_error(f"upload of {src} to volume {name} failed", exc) from None
        if isinstance(exc, OSError):
            raise VirtError(f"upload of {src} to volume {name} failed: {exc}") from None
        raise
    return vol


def _discard(stream: libvirt.virStream, vol: libvirt.virStorageVol) -> None:
    """Abort a failed upload and delete its volume; cleanup errors are logged, not raised."""
    try:
        stream.abort()
    except libvirt.libvirtError as exc:
        log.debug("aborting the upload stream: %s", exc.get_error_message())
    try:
        vol.delete(0)
    except libvirt.libvirtError as exc:
        log.warning("cannot delete partial volume %s: %s", vol.name(), exc.get_error_message())
