"""An aarch64 image made on this x86_64 host: bootstrapped through qemu-user, customized in the x86
appliance with the guest's programs emulated (an install and a file), booted under libvirt with
qemu-system-aarch64 (virt machine, UEFI from AAVMF, TCG), and checked through its guest agent, all
in one build and one boot."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from imagebuilder.virt.domain import remove_domain
from imagebuilder.virt.wait import agent_exec, wait_for_agent
from tests.integration.conftest import run_cli
from tests.integration.helpers import unique
from tests.integration.virt_helpers import forget_logs

pytestmark = pytest.mark.integration

RECIPE = """
[image]
name = "{name}"
arch = "aarch64"

[base.bootstrap]
suite = "bookworm"
kernel = "linux-image-cloud-arm64"

[disk]
size = "2G"
format = "qcow2"

[[steps]]
install = ["hello"]

[[steps]]
write = {{ path = "/etc/imagebuilder-arch", content = "built on x86_64 for aarch64\\n" }}

[output]
pool = "{pool}"

[domain]
memory = "1G"
network = "none"
wait = "agent"
timeout = "10m"

[[tests]]
name = "the kernel is aarch64"
command = "uname -m"
stdout = "^aarch64$"

[[tests]]
name = "the package's program runs"
command = "hello"
stdout = "^Hello, world!$"
"""

# Anything of the emulation that could have stayed in the image: the emulator under any of its
# names, a binfmt rule naming it, and the appliance's registration.
LEFTOVERS = "find / -xdev \\( -name 'qemu-*-static' -o -name '*-binfmt-P' -o -name 'imagebuilder-emulation' \\) -print; " \
            "grep -rls qemu /etc/binfmt.d /usr/lib/binfmt.d 2>/dev/null; ls /proc/sys/fs/binfmt_misc"


@pytest.mark.timeout(2400)  # about 14 minutes alone under TCG, mostly emulated package work (bench/arch.py)
def test_an_aarch64_image_builds_here_boots_and_runs_its_programs(tmp_path, conn, pool, cache_dir):
    name = unique("arm64")
    recipe_file = tmp_path / "arm64.toml"
    recipe_file.write_text(RECIPE.format(name=name, pool=pool.name()))
    manifest_file = tmp_path / "arm64.manifest.json"
    try:
        proc = run_cli("build", str(recipe_file), "--test", "--cache-dir", str(cache_dir),
                       "--manifest", str(manifest_file), timeout=2200)
        assert proc.returncode == 0, proc.stderr[-3000:]
        progress = proc.stderr
        assert "aarch64 programs through qemu-user" in progress
        assert "making the GRUB boot loader for UEFI (aarch64) with this host's grub-mkimage" in progress
        for check in ("the kernel is aarch64", "the package's program runs"):
            assert f"PASS {check}" in progress, progress[-3000:]

        manifest = json.loads(manifest_file.read_text())
        assert manifest["arch"] == "aarch64" and manifest["os"]["arch"] == "aarch64"
        assert manifest["domain"]["accelerator"] == "tcg"

        dom = conn.lookupByName(name)
        root = ET.fromstring(dom.XMLDesc(0))
        os_type = root.find("os/type")
        assert (os_type.get("arch"), os_type.get("machine").split("-")[0]) == ("aarch64", "virt")
        assert "AAVMF" in (root.findtext("os/loader") or "")
        assert root.findtext("devices/emulator").endswith("qemu-system-aarch64")

        wait_for_agent(dom, 300)
        code, out, _ = agent_exec(dom, ["uname", "-m"], timeout=60)
        assert (code, out.strip()) == (0, "aarch64")
        code, out, _ = agent_exec(dom, ["hello"], timeout=60)
        assert (code, out.strip()) == (0, "Hello, world!")
        code, out, _ = agent_exec(dom, ["cat", "/etc/imagebuilder-arch"], timeout=60)
        assert out == "built on x86_64 for aarch64\n"
        code, out, err = agent_exec(dom, ["sh", "-c", LEFTOVERS], timeout=180)
        assert out.split() == ["register", "status"], out + err  # no emulator, no rule, no registration
    finally:
        remove_domain(conn, name)
        forget_logs(name)
