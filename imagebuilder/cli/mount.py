"""`imagebuilder mount` and `umount`: a guest's filesystems at a host directory, like guestmount -i."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from imagebuilder.cli.common import AccelOpt, ConnectOpt, duration, exit_on_error, warn
from imagebuilder.errors import HostError, InputError

DirArg = Annotated[Path, typer.Argument(help="An existing directory (the mount point).", show_default=False)]


def mount_command(
    target: Annotated[str, typer.Argument(metavar="IMAGE|VOLUME", help="A disk image file, or a volume of --pool.",
                                          show_default=False)],
    directory: DirArg,
    rw: Annotated[bool, typer.Option(
        "--rw", help="Read-write (refused while a running domain uses the image).")] = False,
    pool: Annotated[str, typer.Option(help="The pool of VOLUME.")] = "default",
    connect: ConnectOpt = None,
    accel: AccelOpt = None,
    timeout: Annotated[str, typer.Option(help="How long the appliance may take to show the guest.")] = "5m",
) -> None:
    """Mount the guest's filesystems at DIR, as `guestmount -i` does: read-only unless --rw. It stays
    mounted, served by a background process, until `imagebuilder umount DIR`."""
    from imagebuilder import accel as accelerator, disk
    from imagebuilder.guest import mount

    seconds = duration(timeout, "--timeout")
    with exit_on_error():
        image = _image(target, pool, connect)
        fmt = disk.info(image)["format"]  # an overlay (a clone) is fine: its backing file is only read
        if rw:
            _refuse_in_use(image, connect)
        mount.start(image, fmt, directory, rw, accelerator.choose(accel), seconds, warn)
    typer.echo(f"{image} is mounted at {directory.resolve()} ({'read-write' if rw else 'read-only'}); "
               f"`imagebuilder umount {directory}` unmounts it")


def umount_command(directory: DirArg) -> None:
    """Unmount what `imagebuilder mount` (or guestmount) mounted at DIR, and wait until its appliance has
    shut down (so that writes are on the disk)."""
    from imagebuilder.guest import mount

    with exit_on_error():
        mount.unmount(directory, warn)
    typer.echo(f"unmounted {directory.resolve()}")


def _image(target: str, pool_name: str, uri: Optional[str]) -> Path:
    """The image file: target itself, or the path of volume `target` in the pool (a local one)."""
    path = Path(target)
    if path.is_file():
        return path.resolve()
    if "/" in target:
        raise InputError(f"{target}: no such file")
    from imagebuilder.virt import connection, storage

    with connection.connect(uri) as conn:
        pool = storage.find_pool(conn, pool_name)
        vol = storage.find_volume(pool, target) if pool is not None else None
        if vol is None:
            raise InputError(f"{target}: no such file, and no volume {target} in pool {pool_name}")
        if not connection.is_local(conn):
            raise InputError(f"volume {target} is on another host ({conn.getURI()}); mount works on this host")
        return Path(vol.path())


def _refuse_in_use(image: Path, uri: Optional[str]) -> None:
    """--rw: refuse an image a running domain (or any process, such as another mount) has open."""
    from imagebuilder.deploy.retention import held_open
    from imagebuilder.virt import connection, domain

    users = held_open(str(image))
    try:
        with connection.connect(uri) as conn:
            users = [f"domain {name}" for name in domain.running_on(conn, str(image))] + users
    except HostError:
        pass  # no libvirt here: the open files still tell
    if users:
        raise InputError(f"--rw: {image} is in use ({', '.join(users)}); writing to the disk of a running guest "
                         "corrupts it", hint="mount it read-only (without --rw), or stop the guest first")
