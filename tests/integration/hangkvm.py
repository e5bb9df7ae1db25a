"""A qemu that stands for a host where KVM looks usable but no guest ever runs under it.

Asked for KVM, it starts the guest under TCG with a firmware whose reset vector jumps to itself:
the vCPU spins at full speed and the console stays silent, as on the hosts where a Linux kernel
hangs under KVM after "Booting from ROM...". Capability probes (`-machine none`, `-help`, …) and
TCG guests pass through to the real qemu unchanged, so libvirt and libguestfs see KVM offered.
"""

from __future__ import annotations

from pathlib import Path

REAL_QEMU = "/usr/bin/qemu-system-x86_64"
MODULES = "/usr/lib/x86_64-linux-gnu/qemu"
DATA = ("/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu")  # `qemu-system-x86_64 -L help`

_WRAPPER = '''#!{python}
import os, sys
REAL, FIRMWARE = {real!r}, {firmware!r}
args = sys.argv[1:]
machine = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "-machine"), "")
wants_kvm = any("accel=kvm" in a for a in args) or any(a == "-accel" and b.startswith("kvm")
                                                        for a, b in zip(args, args[1:]))
if wants_kvm and not machine.startswith("none"):
    out, skip = [], False
    for i, a in enumerate(args):
        prev = args[i - 1] if i else ""
        if prev == "-accel" and a.startswith("kvm"):
            a = "tcg"
        elif prev == "-cpu":
            a = "max"
        elif "accel=kvm" in a:
            a = a.replace("accel=kvm:tcg", "accel=tcg").replace("accel=kvm", "accel=tcg")
        out.append(a)
    args = out + ["-bios", FIRMWARE]
# qemu finds its modules and firmware relative to itself, which a bound copy elsewhere is not
os.environ.setdefault("QEMU_MODULE_DIR", {modules!r})
os.execv(REAL, [REAL] + [option for path in {data!r} for option in ("-L", path)] + args)
'''


def make(directory: Path, real: str | Path = REAL_QEMU) -> Path:
    """Write the wrapper and its firmware into directory (readable by libvirt's qemu user); its path.
    `real` is where the wrapper finds the real qemu (loopback.py binds it elsewhere in its namespace)."""
    firmware = directory / "spin.bin"
    rom = bytearray(b"\xf4" * 65536)  # hlt everywhere; at the reset vector (16 bytes from the end): jmp $
    rom[-16:-14] = b"\xeb\xfe"
    firmware.write_bytes(bytes(rom))
    wrapper = directory / "qemu-system-x86_64"
    wrapper.write_text(_WRAPPER.format(python="/usr/bin/python3", real=str(real), firmware=str(firmware),
                                       modules=MODULES, data=DATA))
    wrapper.chmod(0o755)
    firmware.chmod(0o644)
    return wrapper
