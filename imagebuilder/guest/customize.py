"""The customize stage: one appliance for layout, inspection, every step, sysprep and SELinux relabelling.

The order is virt-customize's (customize_run.ml): the steps as written, except that passwords are set
after all other steps (so that `password bob:…` may come before the step that creates bob); then,
in imagebuilder, sysprep; then, unless a `no_selinux_relabel` step says otherwise, the files of a
guest that uses SELinux are relabelled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from imagebuilder import arches
from imagebuilder.errors import GuestError
from imagebuilder.guest import layout, passwords, pkgcache, sysprep
from imagebuilder.guest.context import GuestContext
from imagebuilder.guest.inspect import inspect_and_mount
from imagebuilder.guest.ops import REGISTRY
from imagebuilder.guest.session import Drive, GuestSession
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe
from imagebuilder.recipe.model import Step
from imagebuilder.sources.base import BaseImage

DEFERRED = ("root_password", "password")  # set after every other step, as virt-customize does


def customize(disk: Path, fmt: str, accel: str, recipe: Recipe, base: BaseImage, grown: bool,
              reporter: Reporter, steps: tuple[int, int] | None = None, finish: bool = True,
              after: Callable[[GuestContext], None] | None = None,
              packages: pkgcache.PackageCache | None = None) -> dict[str, str]:
    """Apply the recipe to disk in a single libguestfs launch; return the inspected OS facts.

    `steps` (first, end) limits the run to recipe.steps[first:end] (all by default); the disk
    layout or expansion happens only when first is 0, sysprep only when `finish`. `after` reads the
    finished guest, still mounted, in the same launch (the SBOM's package list). With `packages`, the
    package steps use and fill that cache (see pkgcache.py).
    """
    first, end = steps or (0, len(recipe.steps))
    arch = arches.lookup(recipe.base.arch)
    emulate = arch if arches.foreign(arch.name) else None
    how = f"{accel}{', network on' if recipe.network else ''}{f', {arch.name} programs through qemu-user' if emulate else ''}"
    reporter.info(f"starting the libguestfs appliance ({how})")
    with ExitStack() as session:
        drives = [Drive(disk, fmt)]
        if first == 0 and base.kind == "rootfs":
            drives.append(session.enter_context(layout.rootfs_drive(base.path, disk.parent)))
        scratch = session.enter_context(packages.scratch(recipe.steps[first:end], base.digest)) if packages else None
        if scratch:
            drives.append(Drive(scratch.path, "raw", label=pkgcache.LABEL))
        with reporter.phase("launch"):
            g = session.enter_context(GuestSession(drives, accel, network=recipe.network, say=reporter.info,
                                                   emulate=emulate))
        ctx = GuestContext(g, reporter)
        if first == 0:
            _lay_out(ctx, recipe, base, grown)
        with reporter.phase("inspection"):
            facts = inspect_and_mount(ctx)
        reporter.info(f"found {facts['product_name']} ({facts['distro']} {facts['version']}, {facts['arch']})")
        if facts["arch"] not in (arch.name, "unknown"):
            raise GuestError(f"the base image is {facts['arch']} and the recipe builds {arch.name}",
                             hint=f"write arch = \"{facts['arch']}\" under [image] (the host's arch is the default)")
        with pkgcache.in_launch(ctx, packages, scratch):
            apply_steps(ctx, recipe, first, end)
        if finish:
            _finish(ctx, recipe, after)
        with reporter.phase("shutdown"):
            g.umount_all()
            session.close()
    return facts


def _finish(ctx: GuestContext, recipe: Recipe, after: Callable[[GuestContext], None] | None) -> None:
    """The end of the last stretch: sysprep, SELinux relabelling, then `after` (the SBOM's reading)."""
    if recipe.sysprep:
        ctx.reporter.info(f"sysprep: {', '.join(recipe.sysprep)}")
        with ctx.reporter.phase("sysprep"):
            sysprep.apply(ctx, list(recipe.sysprep))
    if (recipe.steps or recipe.sysprep) and relabels(recipe.steps):
        with ctx.reporter.phase("selinux relabel"):
            selinux_relabel(ctx)
    if after is not None:
        with ctx.reporter.phase("sbom reading"):
            after(ctx)


def _lay_out(ctx: GuestContext, recipe: Recipe, base: BaseImage, grown: bool) -> None:
    """Make a bootstrap's blank disk bootable, or grow a base that was enlarged."""
    if base.kind == "rootfs":
        with ctx.reporter.phase("layout (bootstrap)"):
            layout.install_rootfs(ctx, recipe.name, arches.lookup(recipe.base.arch))
            ctx.g.umount_all()
    elif grown:
        with ctx.reporter.phase("layout (expand)"):
            partition = layout.expand_root(ctx, base.expand, base.lvexpand)
        how = " (the template's expand hint)" if base.expand else ""
        ctx.reporter.info(f"expanded {partition} to fill the disk{how}")


def in_order(steps: Sequence[Step], first: int = 0, end: int | None = None) -> list[tuple[int, Step]]:
    """The steps of steps[first:end] to run, numbered from 1, in virt-customize's order: the passwords
    of all the steps are set after every other step, so in the stretch that ends with the last step."""
    end = len(steps) if end is None else end
    now = [(n, s) for n, s in enumerate(steps[first:end], first + 1) if s.op not in DEFERRED]
    if end == len(steps):
        now += [(n, s) for n, s in enumerate(steps, 1) if s.op in DEFERRED]
    return now


def relabels(steps: Sequence[Step]) -> bool:
    """Whether files are relabelled at the end (on guests that use SELinux): yes, unless a step says no."""
    return not any(step.op == "no_selinux_relabel" for step in steps)


def apply_steps(ctx: GuestContext, recipe: Recipe, first: int = 0, end: int | None = None) -> None:
    """The steps recipe.steps[first:end] (passwords last, see in_order); a failure names the step, its
    file and line."""
    cryptos = [step.arg for step in recipe.steps if step.op == "password_crypto"]
    ctx.state["password_crypto"] = cryptos[-1] if cryptos else passwords.DEFAULT_CRYPTO
    total = len(recipe.steps)
    for number, step in in_order(recipe.steps, first, end):
        later = " (set after the other steps, as virt-customize does)" if step.op in DEFERRED else ""
        ctx.reporter.info(f"[{number}/{total}] {step.describe()}{later}")
        try:
            with ctx.reporter.phase(f"step {number} ({step.op})"):
                REGISTRY[step.op].apply(ctx, step.arg)
        except GuestError as exc:
            raise GuestError(f"{step.where(recipe.file)}: step {number} '{step.op}' failed: {exc.message}",
                             hint=exc.hint) from None
        except OSError as exc:  # a host file that went away after validation
            raise GuestError(f"{step.where(recipe.file)}: step {number} '{step.op}' failed: {exc}") from None


def selinux_relabel(ctx: GuestContext) -> None:
    """Relabel the guest's files if it uses SELinux; if that fails, have it relabel itself at boot."""
    g = ctx.g
    if not (g.is_file("/etc/selinux/config", followsymlinks=True) and
            g.is_file("/usr/sbin/load_policy", followsymlinks=True)):
        return  # the guest does not use SELinux
    policy = "targeted"
    for line in g.read_file("/etc/selinux/config").decode(errors="replace").splitlines():
        if line.strip().startswith("SELINUXTYPE="):
            policy = line.split("=", 1)[1].strip() or policy
    specfile = f"/etc/selinux/{policy}/contexts/files/file_contexts"
    try:
        ctx.reporter.info(f"relabelling files with the SELinux policy '{policy}'")
        g.selinux_relabel(specfile, "/", force=True)
    except GuestError as exc:
        ctx.reporter.info(f"relabelling failed ({exc.message}); the guest will relabel itself at boot")
        g.touch("/.autorelabel")
