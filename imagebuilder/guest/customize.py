"""The customize stage: one appliance for layout, inspection, every step and sysprep."""

from __future__ import annotations

from pathlib import Path

from imagebuilder.errors import GuestError
from imagebuilder.guest import layout, sysprep
from imagebuilder.guest.context import GuestContext
from imagebuilder.guest.inspect import inspect_and_mount
from imagebuilder.guest.ops import REGISTRY
from imagebuilder.guest.session import GuestSession
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe
from imagebuilder.sources.base import BaseImage


def customize(disk: Path, fmt: str, accel: str, recipe: Recipe, base: BaseImage, grown: bool,
              reporter: Reporter) -> dict[str, str]:
    """Apply the recipe to disk in a single libguestfs launch; return the inspected OS facts."""
    reporter.info(f"starting the libguestfs appliance ({accel}{', network on' if recipe.network else ''})")
    with GuestSession(disk, fmt, accel, network=recipe.network) as g:
        ctx = GuestContext(g, reporter)
        if base.kind == "rootfs":
            layout.install_rootfs(ctx, base.path, recipe.name)
            g.umount_all()
        elif grown:
            partition = layout.expand_root(ctx)
            reporter.info(f"expanded {partition} to fill the disk")
        facts = inspect_and_mount(ctx)
        reporter.info(f"found {facts['product_name']} ({facts['distro']} {facts['version']})")
        total = len(recipe.steps)
        for number, step in enumerate(recipe.steps, 1):
            reporter.info(f"[{number}/{total}] {step.describe()}")
            try:
                REGISTRY[step.op].apply(ctx, step.arg)
            except GuestError as exc:
                where = f"{recipe.file}:{step.line}" if step.line else str(recipe.file)
                raise GuestError(f"{where}: step {number} '{step.op}' failed: {exc.message}") from None
        if recipe.sysprep:
            reporter.info(f"sysprep: {', '.join(recipe.sysprep)}")
            sysprep.apply(ctx, list(recipe.sysprep))
        g.umount_all()
    return facts
