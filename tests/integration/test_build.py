"""Whole builds through the command line against real libguestfs, libvirtd and qemu."""

from __future__ import annotations

import json
import os
import re
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import guestfs
import pytest

from imagebuilder import recipe as recipe_module
from imagebuilder.virt.domain import remove_domain
from imagebuilder.virt.storage import delete_volume, ensure_pool
from imagebuilder.virt.wait import agent_exec
from tests.integration.conftest import ROOT, run_cli
from tests.integration.helpers import sbom_packages, sha256, unique

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


def guest_run(dom, *argv: str) -> str:
    """Run a command in the booted guest through the agent; it must succeed."""
    code, out, err = agent_exec(dom, list(argv), timeout=120)
    assert code == 0, (argv, out, err)
    return out


def test_demo_recipe_builds_boots_and_answers(tmp_path, cache_dir, conn):
    name = unique("demo")
    text = (ROOT / "recipes" / "demo.toml").read_text()
    text = re.sub(r'^name = "demo"$', f'name = "{name}"', text, flags=re.MULTILINE)
    text = text.replace('volume = "demo-{date}-{n}.qcow2"', f'volume = "{name}-{{date}}-{{n}}.qcow2"')
    recipe_file = tmp_path / "demo.toml"
    recipe_file.write_text(text)
    expected = {step.op: step.arg for step in recipe_module.load(recipe_file).steps}
    manifest_file = tmp_path / "demo.manifest.json"
    pool, _ = ensure_pool(conn, "default")
    try:
        proc = run_cli("build", str(recipe_file), "--cache-dir", str(cache_dir), "--manifest", str(manifest_file))
        assert proc.returncode == 0, proc.stderr[-3000:]
        dom = conn.lookupByName(name)
        assert dom.isActive()
        assert guest_run(dom, "hostname").strip() == expected["hostname"]
        path, content = expected["write"]
        assert guest_run(dom, "cat", path) == content
        for package in expected["install"]:
            assert guest_run(dom, "dpkg-query", "-W", "-f=${Status}", package) == "install ok installed"
        assert guest_run(dom, "readlink", "/etc/localtime").strip().endswith(expected["timezone"])
        assert guest_run(dom, "cat", "/var/lib/imagebuilder-firstboot-ran") == "first boot done\n"
        machine_id = guest_run(dom, "cat", "/etc/machine-id").strip()
        assert len(machine_id) == 32
        # the SBOM written beside the manifest lists exactly what dpkg in the booted guest lists
        listed = guest_run(dom, "dpkg-query", "-W", "-f=${db:Status-Abbrev}|${Package}:${Architecture}|${Version}\n")
        installed = {(name, version) for status, name, version in (line.split("|") for line in listed.splitlines())
                     if status.strip() == "ii"}
        sbom = Path(json.loads(manifest_file.read_text())["records"]["cyclonedx"]["path"])
        assert sbom.parent == tmp_path and sbom_packages(sbom) == installed
        document = json.loads(manifest_file.read_text())
        volume = document["outputs"][0]
        assert re.fullmatch(rf"{name}-\d{{8}}-1\.qcow2", volume["volume"]) and volume["alias"] == f"{name}.qcow2"
        assert os.readlink(Path(volume["path"]).with_name(f"{name}.qcow2")) == volume["volume"], \
            "the domain booted from the alias of version 1"
        assert volume["digest"].startswith("sha256:")
        assert set(document["timings"]) >= {"fetch", "prepare", "customize", "publish", "deploy"}
        assert document["base"]["kind"] == "rootfs"

        # README's next step, as the recipe's comment tells it: test the demo while it runs
        junit = tmp_path / "demo.junit.xml"
        scratch = tmp_path / "tmp"
        scratch.mkdir()
        # the appliance's own cache stays where libguestfs keeps it between runs (it follows TMPDIR otherwise)
        cache = os.environ.get("LIBGUESTFS_CACHEDIR", "/var/tmp")
        passed = run_cli("test", str(recipe_file), "--junit", str(junit),
                         env={"TMPDIR": str(scratch), "LIBGUESTFS_CACHEDIR": cache})
        assert passed.returncode == 0, passed.stderr[-3000:]
        assert f"is the disk of the running domain {name}: checking it there" in passed.stderr
        cases = ET.parse(junit).getroot().findall(".//testcase")
        assert len(cases) == 4 and not ET.parse(junit).getroot().findall(".//failure")
        assert dom.isActive() and [d.name() for d in conn.listAllDomains() if d.name().startswith(name)] == [name]
        assert list(scratch.iterdir()) == [], "the copy of the disk is gone"

        stopped = run_cli("vm", "stop", name, "--method", "any", "--timeout", "5m", "--connect", "qemu:///system")
        assert stopped.returncode == 0 and stopped.stdout.strip() == f"stopped {name}", stopped.stderr
        assert not dom.isActive()
    finally:
        remove_domain(conn, name)
        pool.refresh(0)
        for made in [v for v in pool.listVolumes() if v.startswith(f"{name}")]:
            delete_volume(pool, made)


def test_test_of_an_image_file_boots_a_throwaway_domain_on_an_overlay(tmp_path, base_image, conn):
    """`imagebuilder test --image FILE` where no domain runs from it: files offline, commands in a
    throwaway domain on an overlay; a check that fails is named, in the JUnit file and the summary,
    and makes the exit code 1; afterwards the image is unchanged and the domain gone."""
    recipe_file = tmp_path / "checks.toml"
    recipe_file.write_text(f'[image]\nname = "checks"\n[base]\npath = "{base_image}"\n'
                           '[[tests]]\nfile = "/etc/os-release"\ncontains = "bookworm"\n'
                           '[[tests]]\nname = "the agent runs commands"\ncommand = "cat /etc/debian_version"\n'
                           'stdout = "^12\\\\."\n'
                           '[[tests]]\nname = "expects a lie"\ncommand = "cat /etc/hostname"\n'
                           'stdout = "^not-the-hostname$"\n')
    before = sha256(base_image)
    junit, summary = tmp_path / "checks.junit.xml", tmp_path / "summary.json"
    proc = run_cli("test", str(recipe_file), "--image", str(base_image), "--junit", str(junit),
                   "--summary", str(summary))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"booting a throwaway domain on an overlay of {base_image} for 2 command checks" in proc.stderr
    assert "expects a lie" in proc.stderr
    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert [c.get("name") for c in cases] == ["file /etc/os-release", "the agent runs commands", "expects a lie"]
    failures = ET.parse(junit).getroot().findall(".//testcase[failure]")
    assert [case.get("name") for case in failures] == ["expects a lie"]
    assert json.loads(summary.read_text())["failed"] == 1
    assert sha256(base_image) == before
    assert not [d for d in conn.listAllDomains() if d.name().startswith("checks-test-")]


@pytest.fixture
def served_base(base_image, http_root):
    directory, url = http_root
    link = directory / "base.qcow2"
    if not link.exists():
        link.symlink_to(base_image)
    return f"{url}/base.qcow2", sha256(base_image)


OPS_RECIPE = """
[image]
name = "ops"

[base]
url = "{url}"
checksum = "sha256:{digest}"

[disk]
size = "3G"
format = "raw"

[[steps]]
mkdir = "/opt/app/conf"
[[steps]]
copy_in = {{ from = "tree", to = "/opt/app" }}
[[steps]]
upload = "files/app.conf:/opt/app/conf"
[[steps]]
write = "/etc/greeting:hello"
[[steps]]
append_line = {{ path = "/etc/greeting", line = "second line" }}
[[steps]]
delete = "/etc/issue*"
[[steps]]
run_command = "echo ran > /root/ran && test -d /opt/app/tree"
[[steps]]
root_password = {{ file = "secrets/root.pw" }}
[[steps]]
ssh_inject = "root:file:keys/id.pub"
[[steps]]
hostname = "opsbox.example.org"
[[steps]]
firstboot_command = "touch /root/firstboot-was-here"

[output]
path = "out/ops.raw"
"""

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv0kSLb2nAI6Fr6YQz6UZa0fTwJzYFhS2Z8PHa2Al9k test@imagebuilder"


def test_every_basic_operation_in_one_launch(tmp_path, served_base, cache_dir, launch_counter):
    url, digest = served_base
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "data.txt").write_text("tree data\n")
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "app.conf").write_text("key = value\n")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "root.pw").write_text(PASSWORD + "\n")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id.pub").write_text(KEY + "\n")
    recipe_file = tmp_path / "ops.toml"
    recipe_file.write_text(OPS_RECIPE.format(url=url, digest=digest))
    env, launches = launch_counter

    proc = run_cli("build", str(recipe_file), "--cache-dir", str(cache_dir), env=env)

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert launches() == 1
    image = tmp_path / "out" / "ops.raw"
    manifest_text = (tmp_path / "out" / "ops.manifest.json").read_text()
    for text in (proc.stdout, proc.stderr, manifest_text):
        assert PASSWORD not in text
    assert json.loads(manifest_text)["outputs"][0]["digest"] == f"sha256:{sha256(image)}"

    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend_settings(["force_tcg"])
    g.add_drive_opts(str(image), format="raw", readonly=True)
    g.launch()
    try:
        root = g.inspect_os()[0]
        for mountpoint, device in sorted(g.inspect_get_mountpoints(root).items()):
            g.mount_ro(device, mountpoint)
        assert g.is_dir("/opt/app/conf")
        assert g.cat("/opt/app/tree/sub/data.txt") == "tree data\n"
        assert g.cat("/opt/app/conf/app.conf") == "key = value\n"
        assert g.cat("/etc/greeting") == "hello\nsecond line\n"
        assert g.glob_expand("/etc/issue*") == []
        assert g.cat("/root/ran") == "ran\n"
        root_hash = next(ln.split(":")[1] for ln in g.cat("/etc/shadow").splitlines() if ln.startswith("root:"))
        assert root_hash.startswith("$6$") and crypt.crypt(PASSWORD, root_hash) == root_hash
        assert KEY in g.cat("/root/.ssh/authorized_keys").splitlines()
        assert g.statns("/root/.ssh/authorized_keys")["st_mode"] & 0o777 == 0o600
        assert g.cat("/etc/hostname") == "opsbox.example.org\n"
        assert "opsbox.example.org" in g.cat("/etc/hosts")
        assert any("touch /root/firstboot-was-here" in g.cat(f"/usr/lib/imagebuilder/firstboot/scripts/{f}")
                   for f in g.ls("/usr/lib/imagebuilder/firstboot/scripts"))
        assert g.is_symlink("/etc/systemd/system/multi-user.target.wants/imagebuilder-firstboot.service")
        assert g.cat("/etc/machine-id") == ""
        assert g.glob_expand("/etc/ssh/ssh_host_*") == []
        assert g.statvfs("/")["blocks"] * g.statvfs("/")["bsize"] > 2.7 * 2**30
    finally:
        g.close()


def test_checksum_mismatch_leaves_no_cache_file_and_no_volume(tmp_path, served_base, conn, pool):
    url, digest = served_base
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    recipe_file = tmp_path / "bad.toml"
    recipe_file.write_text(f'[image]\nname = "mismatch"\n[base]\nurl = "{url}"\nchecksum = "sha256:{wrong}"\n'
                           f'[output]\npool = "{pool.name()}"\n')
    cache = tmp_path / "cache"

    proc = run_cli("build", str(recipe_file), "--cache-dir", str(cache))

    assert proc.returncode == 1
    assert "checksum mismatch" in proc.stderr
    assert [p for kind in ("images", "bootstrap") for p in (cache / kind).rglob("*")] == []
    pool.refresh(0)
    assert pool.listVolumes() == []


def test_existing_volume_is_refused_before_any_work(tmp_path, served_base, conn, pool, pool_dir):
    url, digest = served_base
    (pool_dir / "taken.qcow2").write_bytes(b"not ours")
    pool.refresh(0)
    recipe_file = tmp_path / "taken.toml"
    recipe_file.write_text(f'[image]\nname = "taken"\n[base]\nurl = "{url}"\nchecksum = "sha256:{digest}"\n'
                           f'[output]\npool = "{pool.name()}"\nvolume = "taken.qcow2"\n')

    proc = run_cli("build", str(recipe_file), "--cache-dir", str(tmp_path / "cache"))

    assert proc.returncode == 1
    assert "already exists" in proc.stderr and "--force" in proc.stderr
    assert (pool_dir / "taken.qcow2").read_bytes() == b"not ours"
    assert not (tmp_path / "cache" / "images").exists()
