"""The KVM probe boots a real boot sector; under TCG the same sector must print OK."""

from __future__ import annotations

import subprocess
import tempfile

import pytest

from imagebuilder import accel

pytestmark = pytest.mark.integration


def test_probe_sector_prints_ok_under_tcg():
    with tempfile.NamedTemporaryFile(suffix=".img") as disk:
        disk.write(accel._PROBE_SECTOR)
        disk.flush()
        proc = subprocess.Popen(["qemu-system-x86_64", "-accel", "tcg", "-nodefaults", "-display", "none",
                                 "-m", "16", "-serial", "stdio", "-drive", f"file={disk.name},format=raw,if=ide"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            assert accel._wait_for_ok(proc, 20)
        finally:
            proc.kill()
            proc.wait()

