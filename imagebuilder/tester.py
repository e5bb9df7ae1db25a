"""`imagebuilder test`: check a built image the way a golden-image CI job does.

File and package checks run offline on the image (read-only, one appliance launch). Command
checks run in a throwaway domain that boots a qcow2 overlay of the image, so the image itself
never changes; the domain, the overlay and its transient pool are gone afterwards. When the
recipe's own domain runs from the image, the checks run there instead (see run_checks).
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import libvirt

from imagebuilder import accel as accelerator, arches, disk
from imagebuilder.checks import Check, Outcome, Report, judge_command
from imagebuilder.deploy import watchdog
from imagebuilder.deploy.spec import serial_log_path
from imagebuilder.errors import BuildError, InputError
from imagebuilder.guest.session import Drive, GuestSession
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe
from imagebuilder.run import run
from imagebuilder.virt import connection, domain, storage
from imagebuilder.virt.domainxml import DiskSpec, DomainSpec, domain_xml
from imagebuilder.virt.wait import agent_exec, wait_for_agent, wait_for_boot

BOOT_TIMEOUT = 600


def built_image(recipe: Recipe, image: Path | None) -> Path:
    """The image to test: the one given, else the recipe's output file, else its volume in a local pool."""
    if image is not None:
        if not image.is_file():
            raise InputError(f"{image}: no such image file")
        return image
    if recipe.output.path and recipe.output.path.is_file():
        return recipe.output.path
    if recipe.output.libvirt:
        with connection.connect(recipe.output.uri) as conn:
            pool, _ = storage.ensure_pool(conn, recipe.output.pool)
            if storage.volume_exists(pool, recipe.output.current):
                # an alias's version, not the alias: a build meanwhile moves the alias, not this image
                path = Path(pool.storageVolLookupByName(recipe.output.current).path()).resolve()
                if path.is_file():
                    return path
    raise InputError(f"{recipe.file}: no built image found (build it first, or pass --image)")


def run_checks(recipe: Recipe, image: Path, accel: str, reporter: Reporter, uri: str = "qemu:///system") -> Report:
    """Run every [[tests]] check of the recipe against image; the image is never modified.

    When the recipe's own domain runs from the image (as after a build that boots it), the command
    checks run in that domain through its agent, and the offline ones on a point-in-time copy.
    """
    if not recipe.tests:
        raise InputError(f"{recipe.file}: the recipe has no [[tests]] to run")
    report = Report(recipe.name)
    offline = [c for c in recipe.tests if c.kind != "command"]
    booted = [c for c in recipe.tests if c.kind == "command"]
    with connection.connect(uri) as conn:
        running = domain.running_on(conn, str(image)) if connection.is_local(conn) else []
        own = recipe.domain.name if recipe.domain else None
        if running and own not in running:
            raise BuildError(f"{image} is in use by the running domain {running[0]}, so it cannot be tested now",
                             hint="stop it first (imagebuilder vm stop NAME), or test a copy with --image")
        if running:
            _in_running_domain(conn.lookupByName(own), image, accel, offline, booted, report, reporter)
    if not running:
        fmt, _ = disk.probe(image)
        if offline:
            reporter.info(f"offline checks on {image}: {len(offline)}")
            _offline(image, fmt, accel, offline, report)
        if booted:
            reporter.info(f"booting a throwaway domain on an overlay of {image} for {len(booted)} command checks")
            _booted(recipe, image, fmt, accel, uri, booted, report, reporter)
    order = {check.name: index for index, check in enumerate(recipe.tests)}
    report.outcomes.sort(key=lambda outcome: order[outcome.check.name])
    for outcome in report.outcomes:
        mark = "PASS" if outcome.passed else "FAIL"
        reporter.info(f"{mark} {outcome.check.name}" + (f": {outcome.message}" if outcome.message else ""))
    return report


def _in_running_domain(dom, image: Path, accel: str, offline: list[Check], booted: list[Check],  # noqa: ANN001
                       report: Report, reporter: Reporter) -> None:
    """The checks on an image the recipe's own domain runs from: commands through its agent, offline
    checks on a copy taken while the guest's filesystems are frozen (or as they are, without an agent)."""
    reporter.info(f"{image} is the disk of the running domain {dom.name()}: checking it there")
    if offline:
        scratch = Path(tempfile.mkdtemp(prefix="imagebuilder-test-"))  # read by the appliance, as root
        try:
            copy = scratch / "copy.qcow2"
            with _frozen(dom, reporter):
                run(["qemu-img", "convert", "-U", "-O", "qcow2", str(image), str(copy)])
            reporter.info(f"offline checks on a copy of {image} taken now: {len(offline)}")
            _offline(copy, "qcow2", accel, offline, report)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    if booted:
        wait_for_agent(dom, BOOT_TIMEOUT)
        wait_for_boot(dom, BOOT_TIMEOUT)
        reporter.info(f"running command checks in {dom.name()} through its guest agent")
        for check in booted:
            report.outcomes.append(_command_check(dom, check))


@contextmanager
def _frozen(dom, reporter: Reporter) -> Iterator[None]:  # noqa: ANN001
    """The guest's filesystems frozen through its agent while the block runs, when the agent can."""
    try:
        dom.fsFreeze()
    except libvirt.libvirtError as exc:
        reporter.info(f"could not freeze the guest's filesystems ({exc.get_error_message()}): the copy is "
                      "taken as they are")
        yield
        return
    try:
        yield
    finally:
        dom.fsThaw()


def _offline(image: Path, fmt: str, accel: str, checks: list[Check], report: Report) -> None:
    with GuestSession(Drive(image, fmt, readonly=True), accel, network=False) as g:
        roots = g.inspect_os()
        if len(roots) != 1:
            raise BuildError(f"{image}: expected one operating system, inspection found {len(roots)}")
        mounts = g.inspect_get_mountpoints(roots[0])
        for mountpoint in sorted(mounts, key=len):
            g.mount_ro(mounts[mountpoint], mountpoint)
        installed = None
        for check in checks:
            start = time.monotonic()
            if check.kind == "file":
                passed, message = _file_check(g, check)
            else:
                if installed is None:
                    installed = {app["app2_name"] for app in g.inspect_list_applications2(roots[0])}
                passed = check.package in installed
                message = "" if passed else f"package {check.package} is not installed"
            report.outcomes.append(Outcome(check, passed, time.monotonic() - start, message))


def _file_check(g, check: Check) -> tuple[bool, str]:
    """A file check; symbolic links are followed inside the guest (/etc/os-release is one on Debian)."""
    if not g.exists(check.file):
        return False, f"{check.file} does not exist"
    if check.contains is None:
        return True, ""
    target = g.realpath(check.file)
    if not g.is_file(target):
        return False, f"{check.file} is not a regular file"
    text = g.read_file(target).decode(errors="replace")
    if re.search(check.contains, text, re.MULTILINE):
        return True, ""
    return False, f"{check.file} does not match /{check.contains}/"


def _booted(recipe: Recipe, image: Path, fmt: str, accel: str, uri: str, checks: list[Check], report: Report,
            reporter: Reporter) -> None:
    suffix = secrets.token_hex(3)
    name = f"{recipe.name}-test-{suffix}"
    scratch = Path(tempfile.mkdtemp(prefix="imagebuilder-test-", dir="/var/tmp"))
    scratch.chmod(0o755)
    serial_log = serial_log_path(name)
    try:
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.resolve()), "-F", fmt,
             str(scratch / "overlay.qcow2")])
        with connection.connect(uri) as conn:
            pool = conn.storagePoolCreateXML(_transient_pool_xml(f"imagebuilder-test-{suffix}", scratch), 0)
            try:
                spec = _throwaway_spec(recipe, name, pool.name(), accelerator.effective(accel), serial_log)
                dom = conn.createXML(domain_xml(spec), 0)
                try:
                    dom, _accel = watchdog.watch(conn, dom, reporter.info)
                    wait_for_agent(dom, recipe.domain.timeout if recipe.domain else BOOT_TIMEOUT, serial_log)
                    reporter.info("guest agent answered; waiting for the boot to finish")
                    wait_for_boot(dom, BOOT_TIMEOUT)
                    reporter.info("running command checks")
                    for check in checks:
                        report.outcomes.append(_command_check(dom, check))
                finally:
                    dom.destroy()
            finally:
                pool.destroy()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        Path(serial_log).unlink(missing_ok=True)


def _transient_pool_xml(name: str, path: Path) -> str:
    root = ET.Element("pool", type="dir")
    ET.SubElement(root, "name").text = name
    ET.SubElement(ET.SubElement(root, "target"), "path").text = str(path)
    return ET.tostring(root, encoding="unicode")


def _throwaway_spec(recipe: Recipe, name: str, pool: str, accel: str, serial_log: str) -> DomainSpec:
    domain, arch = recipe.domain, arches.lookup(recipe.base.arch)
    return DomainSpec(name=name, memory_bytes=domain.memory if domain else 1 << 30,
                      vcpus=domain.vcpus if domain else 1, disks=(DiskSpec(pool, "overlay.qcow2", "qcow2"),),
                      accel=arches.domain_accel(arch.name, accel), arch=arch.name,
                      machine=domain.machine if domain else arch.machines[0],
                      firmware=domain.firmware if domain else arch.firmwares[0],
                      video=domain.video if domain else arch.video, serial_log=serial_log,
                      description=f"imagebuilder test of {recipe.name} (throwaway)")


def _command_check(dom, check: Check) -> Outcome:
    start = time.monotonic()
    try:
        code, out, err = agent_exec(dom, ["/bin/sh", "-c", check.command], timeout=check.timeout)
    except BuildError as exc:
        return Outcome(check, False, time.monotonic() - start, str(exc))
    passed, message = judge_command(check, code, out)
    output = out + (f"\n--- stderr ---\n{err}" if err else "")
    return Outcome(check, passed, time.monotonic() - start, message, output)
