"""`imagebuilder doctor`: what to run first on a new host or CI runner.

Each check is a named function that looks at one thing and says what to do about it; none of them
changes the host (except that the accelerator verdict it finds is remembered, as a build would).
A check fails ("fail") when it blocks a build, and warns ("warn") when only some recipes need it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from imagebuilder import accel as accelerator, arches
from imagebuilder.cache import default_dir
from imagebuilder.errors import ImageBuilderError

GiB = 1 << 30
SPACE_FAIL, SPACE_WARN = 2 * GiB, 10 * GiB
OVMF_CODE = ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd")


@dataclass
class Finding:
    """One check's result: status is ok, warn or fail."""

    check: str
    status: str
    detail: str
    hint: str | None = None

    def as_dict(self) -> dict:
        """For --json."""
        return asdict(self)


@dataclass
class Context:
    """What the checks look at: the libvirt URI (None: libvirt's default) and the cache directory."""

    uri: str | None
    cache_dir: Path
    pool_dir: Path | None = None  # found by the pool check, for the space check


def run_checks(uri: str | None, cache_dir: Path | None = None,
               progress: Callable[[Finding], None] | None = None) -> list[Finding]:
    """Every check, in order; `progress` sees each finding as it is made."""
    ctx = Context(uri, cache_dir or default_dir())
    findings = []
    for check in CHECKS:
        finding = check(ctx)
        findings.append(finding)
        if progress:
            progress(finding)
    return findings


def blocking(findings: list[Finding]) -> bool:
    """Whether something blocks a build."""
    return any(f.status == "fail" for f in findings)


def check_qemu(_ctx: Context) -> Finding:
    qemu = accelerator.appliance_qemu()
    if not qemu or not shutil.which(qemu):
        return Finding("qemu", "fail", "qemu-system-x86_64 not found", "apt-get install qemu-system-x86")
    from imagebuilder.run import run
    version = run([qemu, "--version"]).stdout.splitlines()[0]
    return Finding("qemu", "ok", f"{qemu}: {version}")


def check_accelerator(_ctx: Context) -> Finding:
    forced = os.environ.get(accelerator.ENV_VAR)
    verdict = accelerator.host_verdict(fresh=True)
    detail = f"{'KVM' if verdict.kvm else 'TCG'}: {verdict.reason}"
    if forced and forced.lower() != "auto":
        detail += f" (but ${accelerator.ENV_VAR}={forced} overrides it)"
    if verdict.kvm:
        return Finding("accelerator", "ok", detail)
    return Finding("accelerator", "warn", detail,
                   "builds and boots run under TCG (software emulation, several times slower); on a machine "
                   "with working KVM check that /dev/kvm is readable and writable by this user")


def check_appliance(_ctx: Context) -> Finding:
    from imagebuilder.guest.session import Drive, GuestSession
    chosen = accelerator.choose("auto")
    with tempfile.NamedTemporaryFile(suffix=".img") as scratch:
        scratch.truncate(1 << 20)
        start = time.monotonic()
        try:
            with GuestSession(Drive(Path(scratch.name), "raw"), chosen, network=False, say=lambda _: None) as g:
                used = g.accel
        except ImageBuilderError as exc:
            return Finding("libguestfs appliance", "fail", exc.message,
                           "run libguestfs-test-tool for the whole story")
    return Finding("libguestfs appliance", "ok",
                   f"booted under {used.upper()} in {time.monotonic() - start:.1f}s (once per build)")


def check_firmware(_ctx: Context) -> Finding:
    found = next((path for path in OVMF_CODE if os.path.exists(path)), None)
    if found:
        return Finding("UEFI firmware", "ok", found)
    return Finding("UEFI firmware", "warn", "OVMF not found: domain.firmware = \"efi\" cannot boot",
                   "apt-get install ovmf")


def check_libvirt(ctx: Context) -> Finding:
    from imagebuilder.virt import connection
    try:
        with connection.connect(ctx.uri) as conn:
            version = conn.getLibVersion()
            uri = conn.getURI()
    except ImageBuilderError as exc:
        return Finding("libvirt", "fail", exc.message, exc.hint)
    return Finding("libvirt", "ok", f"{uri} answers (libvirt {version // 1000000}.{version // 1000 % 1000}."
                                    f"{version % 1000})")


def check_pool(ctx: Context) -> Finding:
    from imagebuilder.virt import connection, storage
    try:
        with connection.connect(ctx.uri) as conn:
            pool = storage.find_pool(conn, "default")
            if pool is None:
                return Finding("default pool", "warn", "no storage pool 'default'",
                               "a build makes it (a dir pool at /var/lib/libvirt/images)")
            ctx.pool_dir = storage.local_target_dir(conn, pool)
            state = "active" if pool.isActive() else "inactive (a build starts it)"
    except ImageBuilderError as exc:
        return Finding("default pool", "fail", exc.message, exc.hint)
    return Finding("default pool", "ok", f"{state}" + (f", {ctx.pool_dir}" if ctx.pool_dir else ""))


def check_network(ctx: Context) -> Finding:
    from imagebuilder.virt import connection, network
    try:
        with connection.connect(ctx.uri) as conn:
            if not network.network_exists(conn, "default"):
                return Finding("default network", "warn", "no network 'default'",
                               "a build with network = \"default\" makes it (NAT, 192.168.122.0/24)")
            active = conn.networkLookupByName("default").isActive()
            state = "active" if active else "inactive (a build starts it)"
    except ImageBuilderError as exc:
        return Finding("default network", "fail", exc.message, exc.hint)
    return Finding("default network", "ok", state)


def check_bootstrap(_ctx: Context) -> Finding:
    if shutil.which("mmdebstrap"):
        return Finding("mmdebstrap", "ok", shutil.which("mmdebstrap"))
    return Finding("mmdebstrap", "warn", "not found: [base.bootstrap] recipes cannot be built",
                   "apt-get install mmdebstrap")


def check_foreign_arches(_ctx: Context) -> Finding:
    """What images of the other architectures need here: qemu-user (with binfmt_misc, for the
    bootstrap), the full-system QEMU and its UEFI firmware."""
    from imagebuilder.guest.emulation import QEMU_USER
    from imagebuilder.run import CommandError, run
    name = "other architectures"
    others = [arch for arch in arches.ARCHES.values() if arches.foreign(arch.name)]
    missing = []
    for arch in others:
        if not os.path.exists(QEMU_USER.format(arch.name)):
            missing.append(f"{arch.name}: {QEMU_USER.format(arch.name)}")
        elif shutil.which("arch-test") is None:
            missing.append(f"{arch.name}: arch-test")
        else:
            try:
                run(["arch-test", arch.debian], timeout=60)
            except CommandError:
                missing.append(f"{arch.name}: qemu-user is not registered with binfmt_misc")
        if shutil.which(f"qemu-system-{arch.name}") is None:
            missing.append(f"{arch.name}: qemu-system-{arch.name}")
    if others and shutil.which("grub-mkimage") is None:
        missing.append("grub-mkimage (grub-common)")
    if missing:
        return Finding(name, "warn", f"[image] arch cannot be {' or '.join(a.name for a in others)}: "
                                     + "; ".join(missing),
                       "scripts/setup.sh installs qemu-user-static, arch-test, qemu-system-arm and "
                       "qemu-efi-aarch64, and registers qemu-user")
    return Finding(name, "ok", f"{', '.join(a.name for a in others)} through qemu-user and TCG")


def check_space(ctx: Context) -> Finding:
    places = {"cache": ctx.cache_dir, "pool": ctx.pool_dir}
    worst, parts = "ok", []
    for what, path in places.items():
        if path is None:
            continue
        existing = next((p for p in [path, *path.parents] if p.exists()), Path("/"))
        free = shutil.disk_usage(existing).free
        parts.append(f"{what} {path}: {free / GiB:.1f} GiB free")
        status = "fail" if free < SPACE_FAIL else "warn" if free < SPACE_WARN else "ok"
        worst = max(worst, status, key=("ok", "warn", "fail").index)
    hint = None if worst == "ok" else "a build needs room for the base image, a working copy and the result"
    return Finding("free space", worst, "; ".join(parts), hint)


def check_permissions(ctx: Context) -> Finding:
    problems = []
    existing = next((p for p in [ctx.cache_dir, *ctx.cache_dir.parents] if p.exists()), Path("/"))
    if not os.access(existing, os.W_OK):
        problems.append(f"cannot write to {existing} (the cache)")
    if os.path.exists("/dev/kvm") and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        problems.append("/dev/kvm is not readable and writable (add the user to group kvm)")
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    if problems:
        status = "fail" if "cache" in problems[0] else "warn"
        return Finding("permissions", status, f"{who}: " + "; ".join(problems),
                       "run as root, or give this user the cache directory and the kvm and libvirt groups")
    kvm = ", /dev/kvm readable and writable" if os.path.exists("/dev/kvm") else ""
    return Finding("permissions", "ok", f"{who}: cache writable{kvm}")


CHECKS = (check_qemu, check_accelerator, check_appliance, check_firmware, check_libvirt, check_pool,
          check_network, check_bootstrap, check_foreign_arches, check_space, check_permissions)
