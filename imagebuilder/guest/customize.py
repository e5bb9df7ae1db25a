"""The customize stage: one appliance for layout, inspection, every step, sysprep and SELinux relabelling."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from imagebuilder.errors import GuestError
from imagebuilder.guest import layout, passwords, sysprep
from imagebuilder.guest.context import GuestContext
from imagebuilder.guest.inspect import inspect_and_mount
from imagebuilder.guest.ops import REGISTRY
from imagebuilder.guest.session import GuestSession
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe
from imagebuilder.sources.base import BaseImage


def customize(disk: Path, fmt: str, accel: str, recipe: Recipe, base: BaseImage, grown: bool,
              reporter: Reporter, steps: tuple[int, int] | None = None, finish: bool = True,
              after: Callable[[GuestContext], None] | None = None) -> dict[str, str]:
    """Apply the recipe to disk in a single libguestfs launch; return the inspected OS facts.

    `steps` (first, end) limits the run to recipe.steps[first:end] (all by default); the disk
    layout or expansion happens only when first is 0, sysprep only when `finish`. `after` reads the
    finished guest, still mounted, in the same launch (the SBOM's package list).
    """
    first, end = steps or (0, len(recipe.steps))
    reporter.info(f"starting the libguestfs appliance ({accel}{', network on' if recipe.network else ''})")
    with GuestSession(disk, fmt, accel, network=recipe.network) as g:
        ctx = GuestContext(g, reporter)
        if first == 0:
            _lay_out(ctx, recipe, base, grown)
        facts = inspect_and_mount(ctx)
        reporter.info(f"found {facts['product_name']} ({facts['distro']} {facts['version']})")
        apply_steps(ctx, recipe, first, end)
        if not finish:
            g.umount_all()
            return facts
        if recipe.sysprep:
            reporter.info(f"sysprep: {', '.join(recipe.sysprep)}")
            sysprep.apply(ctx, list(recipe.sysprep))
        if ctx.state.get("selinux_relabel") or any(step.op == "selinux_relabel" for step in recipe.steps):
            selinux_relabel(ctx)  # (the step may have run in an earlier launch, before a checkpoint)
        if after is not None:
            after(ctx)
        g.umount_all()
    return facts


def _lay_out(ctx: GuestContext, recipe: Recipe, base: BaseImage, grown: bool) -> None:
    """Make a bootstrap's blank disk bootable, or grow a base that was enlarged."""
    if base.kind == "rootfs":
        layout.install_rootfs(ctx, base.path, recipe.name)
        ctx.g.umount_all()
    elif grown:
        partition = layout.expand_root(ctx, base.expand, base.lvexpand)
        how = " (the template's expand hint)" if base.expand else ""
        ctx.reporter.info(f"expanded {partition} to fill the disk{how}")


def apply_steps(ctx: GuestContext, recipe: Recipe, first: int = 0, end: int | None = None) -> None:
    """The steps recipe.steps[first:end] in order; a failure names the step, its file and line."""
    cryptos = [step.arg for step in recipe.steps if step.op == "password_crypto"]
    ctx.state["password_crypto"] = cryptos[-1] if cryptos else passwords.DEFAULT_CRYPTO
    total = len(recipe.steps)
    for number, step in enumerate(recipe.steps[first:end], first + 1):
        ctx.reporter.info(f"[{number}/{total}] {step.describe()}")
        try:
            REGISTRY[step.op].apply(ctx, step.arg)
        except GuestError as exc:
            raise GuestError(f"{step.where(recipe.file)}: step {number} '{step.op}' failed: {exc.message}",
                             hint=exc.hint) from None
        except OSError as exc:  # a host file that went away after validation
            raise GuestError(f"{step.where(recipe.file)}: step {number} '{step.op}' failed: {exc}") from None


def selinux_relabel(ctx: GuestContext) -> None:
    """Relabel the guest's files if it uses SELinux; if that fails, have it relabel itself at boot."""
    g = ctx.g
    if not (g.is_file("/etc/selinux/config") and g.is_file("/usr/sbin/load_policy", followsymlinks=True)):
        ctx.reporter.info("selinux_relabel: the guest does not use SELinux; nothing to do")
        return
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
