"""Operations that run at the guest's first boot: scripts, commands and package installs."""

from __future__ import annotations

from pathlib import Path

from imagebuilder import values
from imagebuilder.guest import firstboot, packages
from imagebuilder.guest.context import GuestContext
from imagebuilder.guest.ops.registry import names_text, operation, plain


_FIRSTBOOT_DETAILS = (f"Scripts run once, in recipe order, as root, late in the first boot, from a systemd "
                      f"unit (`{firstboot.SERVICE}.service`) or a SysV init script on other guests; their "
                      f"output goes to `{firstboot.LOG_FILE}` in the guest.")


@operation("firstboot", "Run a host script (or program) once, at the guest's first boot.", "SCRIPT",
           lambda v, c: values.host_path(v, c), 'firstboot = "scripts/register.sh"', describe=lambda p: str(p),
           details=_FIRSTBOOT_DETAILS)
def _firstboot(ctx: GuestContext, script: Path) -> None:
    firstboot.add_script(ctx.g, script.name, script.read_bytes())


@operation("firstboot_command", "Run a shell command once, at the guest's first boot.", "'CMD+ARGS'",
           plain(values.text), 'firstboot_command = "dpkg-reconfigure openssh-server"', details=_FIRSTBOOT_DETAILS)
def _firstboot_command(ctx: GuestContext, command: str) -> None:
    firstboot.add_script(ctx.g, command.split()[0] if command.split() else "command",
                         firstboot.command_script(command))


@operation("firstboot_install", "Install packages at the guest's first boot, with its own network.", "PKG,PKG..",
           plain(values.packages), 'firstboot_install = ["cloud-guest-utils"]', describe=names_text,
           details=_FIRSTBOOT_DETAILS + " The package manager is retried for about a minute while the "
                                        "network comes up.")
def _firstboot_install(ctx: GuestContext, names: tuple[str, ...]) -> None:
    mgr = packages.manager(ctx.os.get("package_management", "unknown"))
    firstboot.add_script(ctx.g, "install-" + "-".join(names), packages.firstboot_script(mgr, names))

