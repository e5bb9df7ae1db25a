"""`destroy`: remove a fleet's machines and what `up` made for them, then the golden volume, unless
anything (anyone's clone) still uses it or the volume cannot be shown to be this recipe's build."""

from __future__ import annotations

from pathlib import Path

import libvirt

from imagebuilder import files, manifest
from imagebuilder.errors import BuildError
from imagebuilder.fleet.common import golden_label, manifest_of, ours, require_fleet
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe
from imagebuilder.virt import clone as virt_clone, connection, domain, storage


class GoldenInUse(BuildError):
    """`destroy` removed the machines, but the golden volume still has users and stays."""


def destroy(recipe: Recipe, keep_golden: bool, reporter: Reporter) -> list[str]:
    """Remove the fleet's machines with the overlays, seeds and data disks they made, then the golden
    volume, unless a clone (anyone's) still uses it: GoldenInUse then, after removing everything else.
    Returns what was removed."""
    require_fleet(recipe)
    out, label = recipe.output, golden_label(recipe)
    removed: list[str] = []
    with connection.connect(out.uri) as conn:
        pool = storage.find_pool(conn, out.pool)
        golden = storage.find_volume(pool, out.volume) if pool is not None else None
        for machine in recipe.machines:
            dom = domain.find(conn, machine.name)
            if dom is None:
                continue
            found = ours(dom, label, machine.name)
            if found is None:
                reporter.info(f"{machine.name}: left alone (not a machine this fleet made)")
                continue
            volumes = _made_volumes(conn, found, pool, golden)
            domain.kill(dom)
            domain.undefine(dom)
            removed.append(f"domain {machine.name}")
            reporter.info(f"{machine.name}: removed the domain")
            for vol_pool, name in volumes:
                if storage.delete_volume(vol_pool, name):
                    removed.append(f"volume {vol_pool.name()}/{name}")
                    reporter.info(f"{machine.name}: removed {vol_pool.name()}/{name}")
        if golden is None or keep_golden:
            return removed
        in_use = virt_clone.users(conn, golden)
        if in_use:
            raise GoldenInUse(f"the golden volume {label} is kept: {', '.join(in_use)} still "
                              f"{'uses' if len(in_use) == 1 else 'use'} it as backing store; a golden image is "
                              "never deleted while a clone depends on it",
                              hint="remove those clones first, then run destroy again")
        reason = _notours(recipe, golden, conn)
        if reason:
            reporter.info(f"the golden volume {label} is left alone: {reason}")
            return removed
        storage.delete_volume(pool, out.volume)
        removed.append(f"volume {label}")
        reporter.info(f"removed the golden volume {label}")
    return removed


def _made_volumes(conn: libvirt.virConnect, found: dict[str, str], pool: libvirt.virStoragePool | None,
                  golden: libvirt.virStorageVol | None) -> list[tuple[libvirt.virStoragePool, str]]:
    """The volumes the machine's metadata says `up` made: those still attached to it or its seeds; the
    overlay only while its backing store is still the golden volume."""
    if pool is None:
        return []
    names = []
    overlay = found.get("overlay")
    if overlay and (vol := storage.find_volume(pool, overlay)) is not None and golden is not None and \
            virt_clone.backing_path(vol) == golden.path():
        names.append(overlay)
    names += found.get("disks", "").split()
    names += [found["seed"]] if found.get("seed") else []
    names += found.get("stale-seeds", "").split()
    return [(pool, name) for name in dict.fromkeys(names)]


def _notours(recipe: Recipe, golden: libvirt.virStorageVol, conn: libvirt.virConnect) -> str | None:
    """Why the golden volume is not known as this recipe's build (None: it is, by its manifest)."""
    document = manifest_of(recipe)
    path = manifest.default_path(recipe, None, recipe.output.pool)
    if document is None:
        return f"no manifest of a build of this recipe names it ({path})"
    outputs = [o for o in document.outputs if o.get("type") == "volume"
               and (o.get("uri"), o.get("pool"), o.get("volume")) == (recipe.output.uri, recipe.output.pool,
                                                                     recipe.output.volume)]
    if not outputs:
        return f"the manifest {path} does not name it"
    if connection.is_local(conn) and Path(golden.path()).is_file():
        if files.file_digest(Path(golden.path())) != outputs[0].get("digest"):
            return f"its content is not what the build recorded in {path} (replaced since?)"
    return None
