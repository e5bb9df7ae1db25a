"""Choose the accelerator: KVM only where a real Linux kernel boots under it, TCG otherwise.

`/dev/kvm` existing proves little: on some hosts qemu aborts under KVM ("failed to set MSR"), on
others a boot sector runs but a Linux kernel hangs after "Booting from ROM...". So the probe boots
the host's kernel (the one libguestfs puts in its appliance) under KVM with each CPU model the
appliance (`-cpu max`) and the domains (`-cpu host`, libvirt's host-passthrough) use, and waits a
bounded time for the kernel to finish its start-up on the serial console. The verdict is kept per
host with its reason; a boot watchdog that later catches a hang under KVM marks KVM unusable
(`demote`), so a wrong verdict is corrected once and remembered.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from imagebuilder.cache import default_dir
from imagebuilder.errors import HostError, InputError
from imagebuilder.run import Child, spawn
from imagebuilder.units import parse_duration

ENV_VAR = "IMAGEBUILDER_ACCEL"
CHOICES = ("auto", "kvm", "tcg")
WATCHDOG_VAR = "IMAGEBUILDER_BOOT_WATCHDOG"
DEFAULT_WATCHDOG = 60.0  # seconds without console output before a boot under KVM counts as hung
PROBE_BOUND = 20.0  # seconds for one probe boot; under KVM the kernel needs about one
CPU_MODELS = ("max", "host")  # the appliance's CPU model, then the domains' host-passthrough
PROBE_VERSION = 2  # bump when the probe changes: an answer of an older probe is not trusted
# The kernel gets no root filesystem: once it has brought up every built-in driver it says so and
# panics, and with panic=-1 and -no-reboot qemu then exits. That line is the proof of a real boot.
DONE_MARKERS = (b"Unable to mount root fs", b"Kernel panic")
BANNER = b"Linux version"
LOCAL = "local"


@dataclass(frozen=True)
class Verdict:
    """Whether KVM works on a host, and why this was decided."""

    kvm: bool
    reason: str
    seconds: float | None = None  # how long the probe took (None: not probed now)


_demoted: dict[str, str] = {}  # host -> why: KVM hung in this process, whatever was asked for


def choose(requested: str | None = None) -> str:
    """Resolve 'auto'|'kvm'|'tcg' (argument, else $IMAGEBUILDER_ACCEL, else auto) to 'kvm' or 'tcg'."""
    return decide(requested)[0]


def decide(requested: str | None = None) -> tuple[str, str]:
    """The accelerator for this host and the reason, for the user to read."""
    value = (requested or os.environ.get(ENV_VAR) or "auto").lower()
    if value not in CHOICES:
        raise InputError(f"accelerator '{value}' is not one of {', '.join(CHOICES)} (from --accel or ${ENV_VAR})")
    if LOCAL in _demoted:
        return "tcg", _demoted[LOCAL]
    if value != "auto":
        return value, f"asked for ({value})"
    verdict = host_verdict()
    return ("kvm" if verdict.kvm else "tcg"), verdict.reason


def effective(accel: str) -> str:
    """accel, unless KVM was found to hang on this host during this process: then 'tcg'."""
    return "tcg" if accel == "kvm" and LOCAL in _demoted else accel


def host_verdict(cache_file: Path | None = None, fresh: bool = False) -> Verdict:
    """probe(), remembered per host until the kernel, qemu or the probe change (`fresh`: probe again)."""
    cache_file = cache_file or _cache_file()
    key = _host_key()
    saved = _load(cache_file)
    entry = saved.get(LOCAL)
    if not fresh and entry and entry.get("key") == key:
        return Verdict(bool(entry["kvm"]), entry["reason"] + " (remembered)")
    verdict = probe()
    _store(cache_file, LOCAL, {"key": key, **asdict(verdict)})
    return verdict


def remote_demoted(uri: str, cache_file: Path | None = None) -> str | None:
    """Why KVM was found to hang on the libvirt host at uri, or None if it never did."""
    if uri in _demoted:
        return _demoted[uri]
    entry = _load(cache_file or _cache_file()).get(uri)
    return entry["reason"] if entry and not entry.get("kvm", True) else None


def demote(why: str, uri: str | None = None, cache_file: Path | None = None) -> None:
    """Mark KVM unusable on this host (or the libvirt host at uri): for this process, and remembered."""
    host = uri or LOCAL
    _demoted[host] = why
    entry = {"kvm": False, "reason": why, "seconds": None}
    if host == LOCAL:
        entry["key"] = _host_key()
    _store(cache_file or _cache_file(), host, entry)


def watchdog_seconds() -> float | None:
    """How long a boot under KVM may show no progress ($IMAGEBUILDER_BOOT_WATCHDOG; 0 turns it off)."""
    text = os.environ.get(WATCHDOG_VAR, "").strip()
    if not text:
        return DEFAULT_WATCHDOG
    if text in ("0", "0s", "off"):
        return None
    try:
        return float(parse_duration(text))
    except ValueError:
        raise InputError(f"${WATCHDOG_VAR} '{text}' is not a duration such as 60s or 2m (0 turns it off)") from None


def probe(accel: str = "kvm", bound: float = PROBE_BOUND) -> Verdict:
    """Boot the host's kernel under `accel` with every CPU model in use; Verdict with the reason."""
    if accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Verdict(False, "no usable /dev/kvm")
    qemu, kernel = appliance_qemu(), probe_kernel()
    if qemu is None:
        return Verdict(False, "qemu-system-x86_64 not found")
    if kernel is None:
        return Verdict(False, "no kernel in /boot to probe with")
    started = time.monotonic()
    for model in CPU_MODELS:
        ok, why = boot_kernel(qemu, kernel, accel, model, bound)
        if not ok:
            return Verdict(False, f"a Linux kernel under {accel.upper()} with -cpu {model} {why}",
                           round(time.monotonic() - started, 1))
    seconds = round(time.monotonic() - started, 1)
    return Verdict(True, f"a Linux kernel booted under {accel.upper()} with -cpu {' and '.join(CPU_MODELS)} "
                         f"in {seconds}s", seconds)


def boot_kernel(qemu: str, kernel: Path, accel: str, cpu: str, bound: float) -> tuple[bool, str]:
    """Boot kernel with no root filesystem; (True, '') once it has finished starting up within bound."""
    argv = [qemu, "-machine", f"pc,accel={accel}", "-cpu", cpu, "-m", "256", "-nodefaults", "-no-user-config",
            "-display", "none", "-no-reboot", "-serial", "stdio", "-kernel", str(kernel),
            "-append", "console=ttyS0 panic=-1"]
    try:
        with spawn(argv, timeout=bound) as child:
            banner, done = _read_until(child)
            try:
                child.wait(timeout=0 if done else 2)  # its console closed: it is exiting, or exited
                exited = True
            except subprocess.TimeoutExpired:
                exited = False
            child.kill()
            _, err = child.communicate()
    except (OSError, HostError) as exc:
        return False, f"could not start: {exc}"
    if done:
        return True, ""
    complaints = [line.strip() for line in err.decode(errors="replace").splitlines() if line.strip()]
    if exited and complaints:
        return False, f"failed: {next((c for c in complaints if 'error' in c.lower()), complaints[-1])}"
    return False, f"{'stopped printing' if banner else 'printed nothing'} within {bound:.0f}s"


def _read_until(child: Child) -> tuple[bool, bool]:
    """Read child's console until the kernel finished starting, it exited, or its bound passed:
    (whether the kernel's banner appeared, whether it finished)."""
    tail, banner = b"", False
    while chunk := child.read():
        tail = tail[-256:] + chunk  # a marker may straddle two reads
        banner = banner or BANNER in tail
        if any(marker in tail for marker in DONE_MARKERS):
            return banner, True
    return banner, False


def appliance_qemu() -> str | None:
    """The qemu that libguestfs runs its appliance with ($LIBGUESTFS_HV, else libguestfs's own)."""
    return os.environ.get("LIBGUESTFS_HV") or shutil.which("qemu-system-x86_64")


def probe_kernel() -> Path | None:
    """The kernel supermin puts into the appliance: $SUPERMIN_KERNEL, else the newest in /boot."""
    if os.environ.get("SUPERMIN_KERNEL"):
        return Path(os.environ["SUPERMIN_KERNEL"])
    kernels = [p for p in Path("/boot").glob("vmlinuz-*") if os.access(p, os.R_OK)]
    return max(kernels, key=lambda p: _version_key(p.name), default=None)


def _version_key(name: str) -> list:
    parts = name.removeprefix("vmlinuz-").replace("-", ".").split(".")
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


def _cache_file() -> Path:
    return default_dir() / "accel.json"


def _host_key() -> str:
    """What the verdict depends on: kernel, qemu binary, the probe kernel, /dev/kvm, the probe itself."""
    def stamp(path: str | Path | None) -> str:
        try:
            info = os.stat(path) if path else None
        except OSError:
            info = None
        return f"{path}:{info.st_size}-{info.st_mtime_ns}" if info else f"{path}:-"

    return "|".join([f"probe{PROBE_VERSION}", os.uname().release, stamp(appliance_qemu()), stamp(probe_kernel()),
                     str(os.path.exists("/dev/kvm"))])


def _load(cache_file: Path) -> dict:
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store(cache_file: Path, host: str, entry: dict) -> None:
    """Record one host's entry; a cache that cannot be written only costs a probe next time."""
    try:
        data = _load(cache_file)
        data[host] = entry
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, cache_file)
    except OSError:
        pass
