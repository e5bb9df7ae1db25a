"""Package operations: install, uninstall and update with the guest's package manager."""

from __future__ import annotations

import re

from imagebuilder import values
from imagebuilder.errors import GuestError
from imagebuilder.guest import packages, pkgcache
from imagebuilder.guest.context import GuestContext
from imagebuilder.guest.ops.registry import flag_arg, names_text, operation, plain


def _package_action(ctx: GuestContext, action: str, names: tuple[str, ...] = ()) -> None:
    mgr = packages.manager(ctx.os.get("package_management", "unknown"))
    g = ctx.g
    guard = mgr.name == "apt" and not g.exists("/usr/sbin/policy-rc.d")
    if guard:  # no daemon may start inside the appliance
        g.write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n")
        g.chmod(0o755, "/usr/sbin/policy-rc.d")
    cache = pkgcache.use(ctx, mgr.name, action)  # apt's downloads kept across builds, out of the image
    try:
        if mgr.refresh and action != "uninstall" and not ctx.state.get("packages_refreshed"):
            try:
                with cache.lists():
                    ctx.command(mgr.argv("refresh", options=cache.options))
            except GuestError as exc:
                raise GuestError(f"refreshing the {mgr.name} package lists failed (is the appliance network on, "
                                 f"and the guest's repositories reachable?): {exc.message}") from None
            ctx.state["packages_refreshed"] = True
        try:
            with cache.packages():
                ctx.command(mgr.argv(action, names, cache.options))
        except GuestError as exc:
            failed = packages.blame(mgr, exc.message, names)
            what = {"install": "installing", "uninstall": "removing", "upgrade": "upgrading"}[action]
            if failed:
                raise GuestError(f"{what} package{'s' if len(failed) > 1 else ''} {', '.join(failed)} "
                                 f"failed: {_last_line(exc.message)}") from None
            raise GuestError(f"{what} {', '.join(names) or 'the packages'} failed: {exc.message}") from None
    finally:
        if guard:
            g.rm_f("/usr/sbin/policy-rc.d")


def _last_line(message: str) -> str:
    """The package manager's own error line (apt's `E: …`, dnf's `Error: …`), else the last line."""
    errors = re.findall(r"(?:^|\s)((?:E|Error|error|ERROR): .*|No match for argument.*)$", message, re.MULTILINE)
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return (errors or lines or [message])[-1].strip()


@operation("install", "Install packages with the guest's package manager (turns the appliance network on).",
           "PKG,PKG..", plain(values.packages), 'install = ["nginx", "curl"]', describe=names_text, needs_network=True,
           details="The package manager is the one libguestfs inspection finds: apt, dnf, yum, zypper, apk or "
                   "pacman. Package lists are refreshed once per build. A failure names the package that "
                   "could not be installed.")
def _install(ctx: GuestContext, names: tuple[str, ...]) -> None:
    _package_action(ctx, "install", names)


@operation("uninstall", "Remove packages with the guest's package manager.", "PKG,PKG..", plain(values.packages),
           'uninstall = ["nano"]', describe=names_text)
def _uninstall(ctx: GuestContext, names: tuple[str, ...]) -> None:
    _package_action(ctx, "uninstall", names)


@operation("update", "Upgrade the installed packages to their latest versions (apt-get upgrade, dnf upgrade …).",
           "", flag_arg, "update = true", flag=True, needs_network=True, describe=lambda _a: "all packages")
def _update(ctx: GuestContext, _arg: bool) -> None:
    _package_action(ctx, "upgrade")
