"""A virt-customize commands file, converted and built, gives the guest virt-customize gives.

The same commands file goes through `imagebuilder convert` + `imagebuilder build`, and through
`virt-customize --commands-from-file` on a copy of the same base image (same accelerator). Then one
read-only appliance compares both guests: every path with its type, mode and owner; the contents
of the configuration and data trees; users, groups and passwords; installed packages. The only
differences allowed are listed in ALLOWED, each with its reason (see docs/operations.md).
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import warnings
from pathlib import Path

import pytest

from tests.integration.conftest import run_cli
from tests.integration.helpers import each_guest, peer_libguestfs_env

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

pytestmark = pytest.mark.integration

# In the style of virt-customize(1) and virt-builder(1)'s examples.
COMMANDS = """\
# web server, as one would write it for virt-customize --commands-from-file
hostname web01.example.com
timezone Europe/London
install tree,bc
uninstall bc

# content
mkdir /srv/www
upload index.html:/srv/www/index.html
copy-in site:/srv/www
chmod 0750:/srv/www
link /srv/www:/var/www
write /etc/motd:Welcome to web01
append-line /etc/hosts:10.0.0.1 db.example.com db
edit /etc/login.defs:\\
  s/^PASS_MAX_DAYS\\s+\\d+/PASS_MAX_DAYS\\t90/
copy /etc/motd:/etc/motd.orig
move /etc/issue:/etc/issue.orig
delete /etc/issue.net
touch /etc/cloud-init.disabled
write /root/throwaway:secret
scrub /root/throwaway
truncate /etc/motd.orig

# accounts (bob's password comes before the command that creates bob: see CHECK)
password bob:password:bob-s3cret
run-command useradd -m -s /bin/bash deploy
run-command useradd -m -s /bin/bash bob
password deploy:password:deploy-pw
root-password password:root-pw
ssh-inject deploy:file:deploy.pub
run setup.sh
firstboot-command systemctl restart ssh
"""

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv0kSLb2nAI6Fr6YQz6UZa0fTwJzYFhS2Z8PHa2Al9k deploy@example"

# Paths whose presence or content may differ, and why.
ALLOWED = {
    "/etc/machine-id": "virt-customize fills an empty machine-id; imagebuilder leaves it for first boot",
    "/etc/timezone": "imagebuilder keeps /etc/timezone in step with /etc/localtime; virt-customize leaves it stale",
    "/tmp/builder.log": "virt-customize keeps its command output in the guest; imagebuilder in its own log",
    "/usr/lib/virt-sysprep*": "first-boot machinery (virt-customize's)",
    "/usr/lib/systemd/system/guestfs-firstboot.service": "first-boot machinery (virt-customize's)",
    "/etc/systemd/system/multi-user.target.wants/guestfs-firstboot.service": "first-boot machinery",
    "/etc/init.d/guestfs-firstboot": "first-boot machinery (virt-customize's)",
    "/etc/rc?.d/S99guestfs-firstboot": "first-boot machinery (virt-customize's)",
    "/usr/lib/imagebuilder*": "first-boot machinery (imagebuilder's)",
    "/etc/systemd/system/imagebuilder-firstboot.service": "first-boot machinery (imagebuilder's)",
    "/etc/systemd/system/multi-user.target.wants/imagebuilder-firstboot.service": "first-boot machinery",
    "/etc/init.d/imagebuilder-firstboot": "first-boot machinery (imagebuilder's)",
    "/etc/rc?.d/S99imagebuilder-firstboot": "first-boot machinery (imagebuilder's)",
    "/etc/shadow": "password hashes have random salts (and sha512 vs yescrypt): compared by verifying them",
}
# Trees that package installation fills with timestamps, logs and caches: listed, not compared.
VOLATILE = ("/var/log", "/var/cache", "/var/lib/apt/lists", "/var/lib/dpkg/*-old", "/var/lib/dpkg/triggers",
            "/var/lib/systemd/deb-systemd-helper-enabled", "/var/lib/ucf", "/var/backups", "/proc", "/sys", "/dev",
            "/run", "/lost+found")
CONTENT_TREES = ("/etc", "/srv", "/root", "/home", "/opt", "/usr/local", "/var/www", "/var/lib/dpkg/info")

# Item 12: virt-customize sets every password after its other operations, so a password may name a
# user that a later command creates. The guest's own perl (perl-base is essential in Debian) checks
# the hash with the guest's libcrypt, and passwd -S says the password is usable.
CHECK = ("perl -e 'my $h = (split /:/, `grep ^bob: /etc/shadow`)[1]; "
         "print crypt(\"bob-s3cret\", $h) eq $h ? \"match\\n\" : \"no match\\n\"'; passwd -S bob")

LISTING = "find / -xdev -printf '%y %#m %U %G %p -> %l\\n' 2>/dev/null | LC_ALL=C sort"
SUMS = "find {trees} -xdev -type f -exec md5sum {{}} + 2>/dev/null | LC_ALL=C sort -k2"


def _allowed(path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path, p.rstrip("*") + "/*")
               for p in ALLOWED)


def _volatile(path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, p) or path.startswith(p.rstrip("*") + "/") or path == p for p in VOLATILE)


def _state(g) -> dict:
    listing = {}
    for line in g.sh(LISTING).splitlines():
        kind, mode, uid, gid, rest = line.split(" ", 4)
        path, _, target = rest.partition(" -> ")
        listing[path] = (kind, mode, uid, gid, target)
    trees = " ".join(t for t in CONTENT_TREES if g.exists(t))
    sums = {}
    for line in g.sh(SUMS.format(trees=trees)).splitlines():
        digest, path = line.split(None, 1)
        sums[path] = digest
    packages = re.findall(r"^Package: (\S+)\n(?:.+\n)*?Status: (.+)\n(?:.+\n)*?Version: (\S+)",
                          g.cat("/var/lib/dpkg/status"), re.MULTILINE)
    shadow = {ln.split(":")[0]: ln.split(":") for ln in g.cat("/etc/shadow").splitlines()}
    scripts = sorted(g.cat(p) for d in ("/usr/lib/virt-sysprep/scripts", "/usr/lib/imagebuilder/firstboot/scripts")
                     if g.is_dir(d) for p in (f"{d}/{n}" for n in g.ls(d)))
    return {"listing": listing, "sums": sums, "packages": {p[0]: p[1:] for p in packages}, "shadow": shadow,
            "firstboot": [s.replace("#!/bin/sh\n", "").strip() for s in scripts]}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("compat")
    (root / "web.cmds").write_text(COMMANDS)
    (root / "index.html").write_text("<h1>web01</h1>\n")
    os.chmod(root / "index.html", 0o644)
    (root / "site").mkdir()
    (root / "site" / "style.css").write_text("body { color: black }\n")
    (root / "deploy.pub").write_text(KEY + "\n")
    (root / "setup.sh").write_text("#!/bin/sh\nmkdir -p /srv/www/logs\nchown deploy:deploy /srv/www/logs\n")
    return root


def _both_ways(project, commands: str, base_image, cache_dir):
    """The commands file converted and built by imagebuilder (ours.qcow2), and run by virt-customize on
    a copy of the same base with the same accelerator (theirs.qcow2); and imagebuilder's build output."""
    converted = run_cli("convert", commands, "--base", str(base_image), cwd=project)
    assert converted.returncode == 0, converted.stderr
    recipe = Path(commands).with_suffix(".toml").name
    (project / recipe).write_text(converted.stdout)
    ours, theirs = project / "ours.qcow2", project / "theirs.qcow2"
    built = run_cli("build", recipe, "-o", str(ours), "--cache-dir", str(cache_dir), "--no-cache", cwd=project)
    assert built.returncode == 0, built.stderr[-4000:]
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base_image), "-F", "qcow2", str(theirs)],
                   check=True)
    env = {**os.environ, **peer_libguestfs_env()}
    proc = subprocess.run(["virt-customize", "-a", str(theirs), "--commands-from-file", commands], cwd=project,
                          env=env, capture_output=True, text=True, timeout=1500, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return ours, theirs, built


def test_converted_commands_file_gives_the_same_guest_as_virt_customize(project, base_image, cache_dir):
    ours, theirs, built = _both_ways(project, "web.cmds", base_image, cache_dir)
    mine, virt = each_guest((ours, theirs), lambda g: {**_state(g), "bob": g.sh(CHECK)})

    for state in (mine, virt):  # the comparison below is not of two empty lists
        assert len(state["listing"]) > 5000 and len(state["sums"]) > 500
        assert state["listing"]["/srv/www/site/style.css"][:4] == ("f", "0644", "0", "0")
        assert state["listing"]["/var/www"] == ("l", "0777", "0", "0", "/srv/www")
    # files: every path, with type, mode, owner and link target
    paths = {p for p in set(mine["listing"]) | set(virt["listing"]) if not _allowed(p)}
    differ = sorted(p for p in paths if not _volatile(p) and mine["listing"].get(p) != virt["listing"].get(p))
    assert differ == [], [(p, mine["listing"].get(p), virt["listing"].get(p)) for p in differ[:20]]
    # contents of the configuration and data trees
    sums = {p for p in set(mine["sums"]) | set(virt["sums"]) if not _allowed(p) and not _volatile(p)}
    differ = sorted(p for p in sums if mine["sums"].get(p) != virt["sums"].get(p))
    assert differ == [], differ[:20]
    # packages
    assert mine["packages"] == virt["packages"]
    assert mine["packages"]["tree"][0] == "install ok installed"
    assert "bc" not in mine["packages"] or mine["packages"]["bc"][0] != "install ok installed"
    # users and passwords: same entries; hashes differ by salt but accept the same passwords
    assert set(mine["shadow"]) == set(virt["shadow"])
    passwords = {"root": "root-pw", "deploy": "deploy-pw", "bob": "bob-s3cret"}
    for user, password in passwords.items():
        for state in (mine, virt):
            hashed = state["shadow"][user][1]
            assert crypt.crypt(password, hashed) == hashed, user
        assert mine["shadow"][user][1].startswith("$6$")
    for user in mine["shadow"]:
        assert mine["shadow"][user][2:] == virt["shadow"][user][2:], user
        if user not in passwords:
            assert mine["shadow"][user][1] == virt["shadow"][user][1], user
    # a password for a user that a later command creates: set after the other steps, as virt-customize
    # does, and usable in both guests by the guest's own libcrypt
    assert "password: bob: inline password (set after the other steps, as virt-customize does)" in built.stderr
    assert "bob-s3cret" not in built.stderr + built.stdout
    for state in (mine, virt):  # ours, then virt-customize's
        check, status = state["bob"].splitlines()
        assert check == "match" and status.split()[:2] == ["bob", "P"], state["bob"]
    # first boot: the same command queued
    assert mine["firstboot"] == virt["firstboot"] == ["systemctl restart ssh"]
    # and the allowed differences are really there, so that the list above stays honest
    assert mine["sums"].get("/etc/timezone") != virt["sums"].get("/etc/timezone")
    for path in (ours, theirs):
        path.unlink()
