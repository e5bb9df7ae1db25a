"""`down`: shut a fleet's running machines down, all at once, and wait until they are off."""

from __future__ import annotations

import time

import libvirt

from imagebuilder.errors import VirtError
from imagebuilder.fleet.common import golden_label, ours, require_fleet
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe
from imagebuilder.virt import connection, domain


def down(recipe: Recipe, timeout: float, force: bool, reporter: Reporter) -> list[str]:
    """Shut the fleet's running machines down (the guest agent, else ACPI), all at once; return their names.

    With `force`, a machine still running after `timeout` seconds is killed; without, VirtError.
    """
    require_fleet(recipe)
    label = golden_label(recipe)
    with connection.connect(recipe.output.uri) as conn:
        asked = []
        for machine in recipe.machines:
            dom = domain.find(conn, machine.name)
            if dom is None:
                reporter.info(f"{machine.name}: not defined")
            elif ours(dom, label, machine.name) is None:
                reporter.info(f"{machine.name}: left alone (not a machine this fleet made)")
            elif not dom.isActive():
                reporter.info(f"{machine.name}: not running")
            else:
                try:
                    dom.shutdownFlags(domain.STOP_METHODS["any"])
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                        raise VirtError(f"cannot shut down {machine.name}: {exc.get_error_message()}") from None
                asked.append((machine.name, dom))
        deadline = time.monotonic() + timeout
        stopped, late = [], []
        for name, dom in asked:
            while dom.isActive() and time.monotonic() < deadline:
                time.sleep(1)
            if dom.isActive():
                late.append((name, dom))
            else:
                stopped.append(name)
                reporter.info(f"{name}: stopped")
        for name, dom in late:
            if not force:
                raise VirtError(f"{', '.join(n for n, _ in late)} still running {timeout:.0f}s after the shutdown "
                                "request", hint="`imagebuilder down --force` kills what does not stop in time")
            domain.kill(dom)
            stopped.append(name)
            reporter.info(f"{name}: killed (it did not stop within {timeout:.0f}s)")
    return stopped
