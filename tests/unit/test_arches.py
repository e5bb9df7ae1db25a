"""Images of another architecture (aarch64 on an x86_64 host): the recipe key, what it refuses, and what
it changes in the bootstrap, the stage keys, the emulator's registration and the domain XML. No VM."""

from __future__ import annotations

import codecs
import xml.etree.ElementTree as ET

import pytest

from imagebuilder import arches, recipe, stages
from imagebuilder.arches import ARCHES
from imagebuilder.errors import RecipeError
from imagebuilder.guest import emulation
from imagebuilder.sources import bootstrap
from imagebuilder.deploy.spec import domain_spec
from imagebuilder.virt.domainxml import domain_xml, validate_xml

ARM = '[image]\nname = "arm"\narch = "aarch64"\n[base.bootstrap]\nsuite = "bookworm"\n'


def load(tmp_path, text: str):
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return recipe.load(path)


def error_of(tmp_path, text: str) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        load(tmp_path, text)
    return info.value


def test_the_arch_defaults_to_the_hosts_and_enters_the_base(tmp_path, monkeypatch):
    monkeypatch.setattr(arches.platform, "machine", lambda: "aarch64")
    assert load(tmp_path, '[image]\nname = "a"\n[base.bootstrap]\n').base.arch == "aarch64"
    monkeypatch.setattr(arches.platform, "machine", lambda: "x86_64")
    assert load(tmp_path, '[image]\nname = "a"\n[base.bootstrap]\n').base.arch == "x86_64"
    assert load(tmp_path, ARM).base.arch == "aarch64"


def test_an_unknown_arch_is_refused_with_the_known_ones(tmp_path):
    error = error_of(tmp_path, '[image]\nname = "a"\narch = "sparc"\n[base.bootstrap]\n')
    assert (error.line, error.key) == (3, "image.arch")
    assert "'sparc' is not an architecture imagebuilder builds for (known: x86_64, aarch64)" in error.problem


def test_a_templates_arch_must_be_the_images(tmp_path):
    template = '[image]\nname = "a"\narch = "x86_64"\n[base]\ntemplate = "debian-12"\narch = "aarch64"\n'
    error = error_of(tmp_path, template)
    assert (error.line, error.key) == (6, "base.arch") and "write it once, under [image]" in error.problem
    only_base = load(tmp_path, '[image]\nname = "a"\n[base]\ntemplate = "debian-12"\narch = "arm64"\n')
    assert only_base.base.arch == "aarch64"  # virt-builder's alias, normalized; the image follows the template


def test_aarch64_has_no_bios_and_no_pc_machine(tmp_path):
    error = error_of(tmp_path, ARM + '[domain]\nfirmware = "bios"\n')
    assert error.key == "domain.firmware" and "aarch64 has no BIOS firmware; it boots from EFI" in error.problem
    error = error_of(tmp_path, ARM + '[domain]\nmachine = "pc-q35-7.2"\n')
    assert error.key == "domain.machine"
    assert "'pc-q35-7.2' is a machine type of x86_64, and this image is aarch64" in error.problem
    error = error_of(tmp_path, '[image]\nname = "x"\narch = "x86_64"\n[base.bootstrap]\n[domain]\nmachine = "virt"\n')
    assert "'virt' is a machine type of aarch64" in error.problem


def test_aarch64_domain_defaults(tmp_path):
    domain = load(tmp_path, ARM + "[domain]\n").domain
    assert (domain.machine, domain.firmware, domain.video) == ("virt", "efi", "none")


def test_a_kernel_of_another_arch_is_refused_with_the_right_name(tmp_path):
    error = error_of(tmp_path, ARM + 'kernel = "linux-image-cloud-amd64"\n')
    assert error.key == "base.bootstrap.kernel"
    assert "is a kernel for amd64, and this image is aarch64 (arm64): write linux-image-cloud-arm64" in error.problem


def test_the_bootstrap_of_arm64_takes_its_kernel_grub_and_mmdebstrap_arch(tmp_path):
    loaded = load(tmp_path, ARM)
    argv = bootstrap.command(loaded.base.bootstrap, "T", ARCHES["aarch64"])
    include = next(a for a in argv if a.startswith("--include=")).removeprefix("--include=").split(",")
    assert "--architectures=arm64" in argv
    assert include[0] == "linux-image-arm64" and {"grub-efi-arm64-bin", "grub2-common"} <= set(include)
    assert not {"grub-pc", "grub-efi-amd64-bin"} & set(include)
    x86 = bootstrap.command(loaded.base.bootstrap, "T", ARCHES["x86_64"])
    assert "--architectures=amd64" in x86 and "grub-pc" in next(a for a in x86 if a.startswith("--include="))


def test_ubuntu_for_arm64_comes_from_the_ports_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGEBUILDER_MIRROR", raising=False)
    ubuntu = '[image]\nname = "u"\narch = "{}"\n[base.bootstrap]\nsuite = "noble"\n'
    assert load(tmp_path, ubuntu.format("aarch64")).base.bootstrap.mirror == "http://ports.ubuntu.com/ubuntu-ports"
    assert load(tmp_path, ubuntu.format("x86_64")).base.bootstrap.mirror == "http://archive.ubuntu.com/ubuntu"


def test_the_arch_enters_the_base_stage_key(tmp_path):
    x86 = load(tmp_path, ARM.replace("aarch64", "x86_64"))
    arm = load(tmp_path, ARM)
    one, two = stages.plan(x86, "sha256:same", b"s" * 32), stages.plan(arm, "sha256:same", b"s" * 32)
    assert one[0].own != two[0].own and one[-1].key != two[-1].key


def test_the_emulators_registration_matches_aarch64_elf_and_keeps_it_out_of_the_guest():
    line = emulation.registration(ARCHES["aarch64"])
    name, kind, offset, magic, mask, interpreter, flags = line.strip(":").split(":")
    assert (name, kind, offset, flags) == ("imagebuilder-aarch64", "M", "", "PF")
    assert interpreter.startswith("/tmp/") and not interpreter.startswith("/sysroot")  # the appliance's, not the image's
    header, mask_bytes = (codecs.decode(text, "unicode_escape").encode("latin-1") for text in (magic, mask))
    assert header[:4] == b"\x7fELF" and header[18:20] == (183).to_bytes(2, "little")  # EM_AARCH64
    assert len(header) == len(mask_bytes) == 20


def test_the_emulator_drive_is_a_tar_of_the_hosts_static_qemu(tmp_path, monkeypatch):
    import tarfile
    fake = tmp_path / "qemu-aarch64-static"
    fake.write_bytes(b"\x7fELF" + b"x" * 1000)
    monkeypatch.setattr(emulation, "QEMU_USER", str(tmp_path / "qemu-{}-static"))
    with emulation.emulator_drive(ARCHES["aarch64"], tmp_path) as archive:
        assert archive.stat().st_size % 512 == 0
        with tarfile.open(archive) as tar:
            assert tar.getnames() == ["aarch64-binfmt-P"] and tar.extractfile("aarch64-binfmt-P").read() == fake.read_bytes()
    assert not archive.exists()
    monkeypatch.setattr(emulation, "QEMU_USER", str(tmp_path / "missing-{}"))
    with pytest.raises(Exception, match="install Debian's qemu-user-static|qemu-user"):
        emulation.emulator(ARCHES["aarch64"])


def test_an_aarch64_domain_is_a_virt_machine_under_tcg_with_a_64_bit_cpu(tmp_path):
    loaded = load(tmp_path, ARM + '[domain]\nmemory = "1G"\n')
    spec = domain_spec(loaded, "default", "arm.qcow2", "kvm")
    assert spec.accel == "tcg" or not arches.foreign("aarch64")
    xml = domain_xml(spec)
    validate_xml(xml)
    root = ET.fromstring(xml)
    os_type = root.find("os/type")
    assert (os_type.get("arch"), os_type.get("machine")) == ("aarch64", "virt")
    assert root.find("os").get("firmware") == "efi"
    assert root.find("os/firmware/feature[@name='secure-boot']").get("enabled") == "no"
    assert root.find("features/apic") is None and root.find("features/acpi") is not None
    if spec.accel == "tcg":
        assert root.find("cpu").get("mode") == "custom" and root.findtext("cpu/model") == "cortex-a57"
    assert root.find("devices/video/model").get("type") == "none"


def test_emulated_programs_get_a_cpu_model_without_pointer_authentication():
    arm = ARCHES["aarch64"]
    assert emulation.environment(arm) == {"QEMU_CPU": "cortex-a57"}
    assert emulation.appliance_append(arm, None) == "QEMU_CPU=cortex-a57"
    assert emulation.appliance_append(arm, "console=ttyS0 quiet") == "console=ttyS0 quiet QEMU_CPU=cortex-a57"


def test_the_offline_grub_boots_the_newest_kernel_from_the_root_uuid():
    from imagebuilder.guest import efigrub
    names = ["config-6.1.0-9-cloud-arm64", "vmlinuz-6.1.0-9-cloud-arm64", "vmlinuz-6.1.0-10-cloud-arm64",
             "initrd.img-6.1.0-10-cloud-arm64", "grub", "efi"]
    assert efigrub.newest_kernel(names) == "6.1.0-10-cloud-arm64"
    with pytest.raises(Exception, match="no kernel in /boot"):
        efigrub.newest_kernel(["grub", "efi"])
    cfg = efigrub.grub_cfg("1234-abcd", "6.1.0-10-cloud-arm64", "console=ttyAMA0,115200n8", "Debian GNU/Linux 12")
    assert "search --no-floppy --fs-uuid --set=root 1234-abcd" in cfg
    assert "\tlinux\t/boot/vmlinuz-6.1.0-10-cloud-arm64 root=UUID=1234-abcd ro console=ttyAMA0,115200n8\n" in cfg
    assert "\tinitrd\t/boot/initrd.img-6.1.0-10-cloud-arm64\n" in cfg


def test_a_bootstraps_host_name_enters_its_base_stage_key(tmp_path):
    one = load(tmp_path, ARM)
    two = load(tmp_path, ARM.replace('name = "arm"', 'name = "other"'))
    assert stages.plan(one, "sha256:same", b"s" * 32)[0].own != stages.plan(two, "sha256:same", b"s" * 32)[0].own


def test_only_the_flat_files_of_the_images_grub_modules_are_unpacked(tmp_path):
    import io
    import tarfile

    from imagebuilder.guest import efigrub
    archive = tmp_path / "modules.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("./linux.mod", b"mod"), ("./moddep.lst", b"deps"), ("sub/x.mod", b"no"), ("../up", b"no")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("evil.mod")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
    efigrub._extract_flat(archive, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["linux.mod", "moddep.lst"]
    assert not (tmp_path / "up").exists()
