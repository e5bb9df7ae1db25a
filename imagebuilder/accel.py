"""Choose the accelerator: KVM only when a real probe boots under it, TCG otherwise."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from imagebuilder.cache import default_dir
from imagebuilder.errors import InputError

ENV_VAR = "IMAGEBUILDER_ACCEL"
CHOICES = ("auto", "kvm", "tcg")

# A 512-byte boot sector that writes "OK" to COM1 and halts: proof that a guest really runs.
_PROBE_SECTOR = bytes.fromhex("ba f8 03 b0 4f ee b0 4b ee f4 eb fd".replace(" ", "")).ljust(510, b"\0") + b"\x55\xaa"


def kvm_works(timeout: float = 15.0) -> bool:
    """Boot the probe sector with KVM and `-cpu host`; True only if it prints OK in time."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with tempfile.NamedTemporaryFile(suffix=".img") as disk:
        disk.write(_PROBE_SECTOR)
        disk.flush()
        argv = ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-nodefaults", "-display", "none",
                "-m", "16", "-no-reboot", "-serial", "stdio",
                "-drive", f"file={disk.name},format=raw,if=ide,snapshot=on"]
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            return False
        try:
            return _wait_for_ok(proc, timeout)
        finally:
            proc.kill()
            proc.wait()


def _wait_for_ok(proc: subprocess.Popen, timeout: float) -> bool:
    """Read the probe's serial output until it says OK, exits, or the time is up."""
    deadline = time.monotonic() + timeout
    seen = b""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if not ready:
            break
        chunk = os.read(proc.stdout.fileno(), 64)
        if not chunk:
            break
        seen += chunk
        if b"OK" in seen:
            return True
    return False


def choose(requested: str | None = None) -> str:
    """Resolve 'auto'|'kvm'|'tcg' (argument, else $IMAGEBUILDER_ACCEL, else auto) to 'kvm' or 'tcg'."""
    value = (requested or os.environ.get(ENV_VAR) or "auto").lower()
    if value not in CHOICES:
        raise InputError(f"accelerator '{value}' is not one of {', '.join(CHOICES)} (from --accel or ${ENV_VAR})")
    if value == "auto":
        return "kvm" if cached_probe() else "tcg"
    return value


def cached_probe(cache_file: Path | None = None) -> bool:
    """kvm_works(), remembered per host: the answer is kept until the kernel or qemu changes."""
    cache_file = cache_file or default_dir() / "accel-probe.json"
    key = _host_key()
    try:
        saved = json.loads(cache_file.read_text())
        if saved.get("key") == key:
            return bool(saved["kvm"])
    except (OSError, ValueError, KeyError):
        pass
    works = kvm_works()
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "kvm": works}))
        os.replace(tmp, cache_file)
    except OSError:
        pass
    return works


def _host_key() -> str:
    """What the probe's answer depends on: kernel, qemu binary, and /dev/kvm being there."""
    qemu = shutil.which("qemu-system-x86_64") or ""
    stat = os.stat(qemu) if qemu else None
    return "|".join([os.uname().release, qemu, f"{stat.st_size}-{stat.st_mtime_ns}" if stat else "",
                     str(os.path.exists("/dev/kvm"))])
