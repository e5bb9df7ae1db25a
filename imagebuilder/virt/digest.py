"""The sha256 of a volume: read in place in a local directory pool, streamed through libvirt elsewhere."""

from __future__ import annotations

import hashlib
from pathlib import Path

import libvirt

from imagebuilder import files
from imagebuilder.errors import InputError, VirtError
from imagebuilder.virt import connection, storage


def volume_digest(uri: str | None, pool_name: str, volume: str) -> tuple[str, str]:
    """('sha256:HEX', how it was read) of volume in pool at uri. A local dir pool's file is hashed
    where it lies; any other volume (remote hosts, other pool types) is downloaded through a libvirt
    stream and hashed as it arrives, never stored."""
    with connection.connect(uri) as conn:
        pool = storage.find_pool(conn, pool_name)
        if pool is None:
            raise InputError(f"there is no pool '{pool_name}' at {conn.getURI()}")
        try:
            pool.refresh(0)
        except libvirt.libvirtError:
            pass  # an inactive or busy pool: look up what libvirt knows
        vol = storage.find_volume(pool, volume)
        if vol is None:
            raise InputError(f"there is no volume '{volume}' in pool '{pool_name}' at {conn.getURI()}")
        if storage.local_target_dir(conn, pool) is not None and Path(vol.path()).is_file():
            return files.file_digest(Path(vol.path())), f"read in place ({vol.path()})"
        return _streamed(conn, vol), f"downloaded through libvirt from {conn.getURI()}"


def _streamed(conn: libvirt.virConnect, vol: libvirt.virStorageVol) -> str:
    hasher = hashlib.sha256()
    stream = conn.newStream(0)
    try:
        vol.download(stream, 0, 0, 0)
        stream.recvAll(lambda _stream, data, _opaque: hasher.update(data), None)
        stream.finish()
    except libvirt.libvirtError as exc:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        raise VirtError(f"downloading volume {vol.name()} failed: {exc.get_error_message()}") from None
    return f"sha256:{hasher.hexdigest()}"
