"""Versioned volumes in libvirt pools: the names a build gives its new version, the alias (a symlink
in the main pool's directory naming the newest version, which the domain's disk points at), and
the removal of versions beyond output.keep that this tool made and nothing uses any more.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagebuilder import versions
from imagebuilder.errors import BuildError, ImageBuilderError
from imagebuilder.progress import Reporter
from imagebuilder.undo import Undo
from imagebuilder.virt import clone, connection, storage

if TYPE_CHECKING:
    import libvirt


def choose_names(hosts: list[Any], history: list[dict[str, Any]], digest: str, when: datetime) -> int:
    """Give every host with a name template (`host.template`) its version's volume name; returns
    the build number. A name some volume already has is never reused: {n} counts on past it."""
    number = versions.next_number(history)
    templated = [host for host in hosts if host.template]
    for host in templated:
        storage.refresh_pool(host.pool)
    while True:
        names = {id(host): versions.render(host.template, when, digest, number) for host in templated}
        taken = [host for host in templated if storage.volume_exists(host.pool, names[id(host)])]
        if not taken:
            break
        if "n" not in versions.fields(taken[0].template):
            raise BuildError(f"volume {names[id(taken[0])]} already exists in pool {taken[0].pool_name} at "
                             f"{taken[0].uri}; versions are never replaced",
                             hint=f"put {{n}} in the volume name template '{taken[0].template}' so that each "
                                  "build gets a name of its own")
        number += 1
    for host in templated:
        host.volume = names[id(host)]
    return number


def check_alias(directory: Path | None, alias: str, label: str, force: bool) -> None:
    """Before any work: the alias must go in a local directory pool, and a file of its name that is
    not a symlink (say, the image of a build before the name had placeholders) needs --force."""
    if directory is None:
        raise BuildError(f"pool {label} is not a local directory pool, so the alias {alias} of the versioned "
                         "volume cannot be made there",
                         hint="build into a local directory pool (such as 'default'), or give output.volume a "
                              "fixed name")
    path = directory / alias
    if path.exists() and not path.is_symlink() and not force:
        raise BuildError(f"volume {alias} in pool {label} is an image, not the alias of a versioned volume "
                         "(use --force to replace it with the alias)")


def point_alias(pool: libvirt.virStoragePool, directory: Path, alias: str, version: str, undo: Undo) -> None:
    """Make the alias name `version`, atomically; on a failed build it names what it did before."""
    path = directory / alias
    before = os.readlink(path) if path.is_symlink() else None
    if path.exists() and before is None:  # an image under the alias's name, replaced with --force
        aside = directory / f".{alias}.imagebuilder-replaced"
        os.replace(path, aside)
        undo.created(f"replacing {path}", lambda: os.replace(aside, path))
        undo.temporary(f"the replaced image {aside}", lambda: aside.unlink(missing_ok=True))
    link = directory / f".{alias}.imagebuilder-link"
    link.unlink(missing_ok=True)
    os.symlink(version, link)
    os.replace(link, path)
    undo.created(f"the alias {path}", lambda: _restore(pool, path, before))
    storage.refresh_pool(pool)


def _restore(pool: libvirt.virStoragePool, path: Path, before: str | None) -> None:
    if before is None:
        path.unlink(missing_ok=True)
    else:
        link = path.with_name(f".{path.name}.imagebuilder-link")
        link.unlink(missing_ok=True)
        os.symlink(before, link)
        os.replace(link, path)
    storage.refresh_pool(pool)


def record(hosts: list[Any], number: int, digest: str, when: datetime) -> dict[str, Any]:
    """The history entry of the version this build made."""
    return {"n": number, "built": when.isoformat(timespec="seconds"), "digest": digest, "state": "present",
            "volumes": [{"uri": host.uri, "pool": host.pool_name, "volume": host.volume}
                        for host in hosts if host.template]}


def prune(history: list[dict[str, Any]], keep: int, template_of: Callable[[str, str], str | None],
          reporter: Reporter, held: int | None = None) -> None:
    """Delete the versions beyond the newest `keep`: only recorded ones whose names still fit the
    template, never the held one, nor one that a domain, an overlay or a process uses. Updates
    history in place."""
    doomed = versions.beyond_keep(history, keep)
    if not doomed:
        reporter.info(f"{len(versions.present(history))} version(s), keep = {keep}: nothing to delete")
    for entry in doomed:
        reasons = ["the alias is held at it (imagebuilder versions --use)"] if entry["n"] == held else []
        if reasons:
            entry["kept_because"] = reasons
            reporter.info(f"kept version {entry['n']} beyond keep = {keep}: {reasons[0]}")
            continue
        for volume in entry["volumes"]:
            if volume.get("deleted"):
                continue
            template = template_of(volume["uri"], volume["pool"])
            if template is None or not versions.matches(template, volume["volume"]):
                reasons.append(f"{volume['volume']} is no longer an output of this recipe")
                continue
            try:
                users = _delete_unused(volume)
            except ImageBuilderError as exc:  # the build succeeded: keep the version, try next time
                reasons.append(f"{volume['volume']} could not be checked or deleted: {exc.message}")
                continue
            if users:
                reasons.append(f"{volume['volume']} is used by {', '.join(users)}")
            else:
                volume["deleted"] = True
                reporter.info(f"deleted version {volume['volume']} in pool {volume['pool']} at {volume['uri']} "
                              f"(keep = {keep})")
        if reasons:
            entry["kept_because"] = reasons
            reporter.info(f"kept version {entry['n']} beyond keep = {keep}: {'; '.join(reasons)}")
        else:
            entry.pop("kept_because", None)
            entry["state"] = "deleted"


def _delete_unused(volume: dict[str, Any]) -> list[str]:
    """Delete the volume unless something uses it; returns the users (empty once deleted or gone)."""
    with connection.connect(volume["uri"]) as conn:
        pool = storage.find_pool(conn, volume["pool"])
        vol = storage.find_volume(pool, volume["volume"]) if pool is not None else None
        if vol is None:
            return []  # the pool or the volume is gone already
        users = clone.users(conn, vol)
        if connection.is_local(conn):
            users += held_open(vol.path())
        if not users:
            storage.delete_volume(pool, volume["volume"])
        return users


def held_open(path: str) -> list[str]:
    """The local processes that have the file open (a VM started from it, say), as "process PID (NAME)"."""
    real = os.path.realpath(path)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == real for fd in fds):
                found.append(f"process {pid} ({Path(f'/proc/{pid}/comm').read_text().strip()})")
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found
