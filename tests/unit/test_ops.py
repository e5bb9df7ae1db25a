"""The registry: argument parsing, passwords, package command lines, docs and `imagebuilder ops`, without a VM."""

from __future__ import annotations

import json
import stat
import tomllib
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imagebuilder.cli import app
from imagebuilder.guest import packages, passwords, reference, sysprep
from imagebuilder.guest.ops import REGISTRY
from imagebuilder.stages import canonical
from imagebuilder.values import ArgContext

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

ROOT = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv0kSLb2nAI6Fr6YQz6UZa0fTwJzYFhS2Z8PHa2Al9k test@imagebuilder"

# The issue's list: virt-customize's operations, plus user and service_enable/service_disable.
EXPECTED = {
    "append_line", "chmod", "chown", "commands_from_file", "copy", "copy_in", "delete", "edit", "firstboot",
    "firstboot_command", "firstboot_install", "hostname", "install", "link", "mkdir", "move", "password",
    "password_crypto", "root_password", "run", "run_command", "scrub", "selinux_relabel", "ssh_inject", "tar_in",
    "timezone", "touch", "truncate", "truncate_recursive", "uninstall", "update", "upload", "write",
    "user", "service_enable", "service_disable",
}


@pytest.fixture
def ctx(tmp_path):
    return ArgContext(tmp_path, tmp_path / "web.toml")


def parse(name, value, ctx):
    return REGISTRY[name].parse(value, ctx)


def test_registry_has_every_operation_the_issue_lists():
    assert EXPECTED <= set(REGISTRY)
    assert set(REGISTRY) - EXPECTED == {"no_logfile", "no_selinux_relabel"}


def test_every_operation_is_documented_with_an_example_that_parses(tmp_path):
    for name in ("files/app.conf", "scripts/setup.sh", "scripts/register.sh", "secrets/root.pw",
                 "secrets/alice.pw", "site.tar"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x\n")
    (tmp_path / "site").mkdir()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id.pub").write_text(KEY + "\n")
    (tmp_path / "legacy.cmds").write_text("hostname web01\n")
    for op in REGISTRY.values():
        assert op.doc and op.doc[0].isupper() and op.doc.endswith("."), op.name
        example = tomllib.loads(op.example)
        assert list(example) == [op.name], op.name
        arg = op.parse(example[op.name], ArgContext(tmp_path, tmp_path / "r.toml", []))
        assert op.flag == (op.syntax == ""), op.name
        json.dumps(canonical(arg))  # every parsed argument can go into a stage key


def test_reference_page_is_up_to_date():
    page = (ROOT / reference.DOC_PATH).read_text()
    assert page == reference.markdown(), "run: imagebuilder ops --markdown > docs/operations.md"
    for op in REGISTRY:
        assert f"### `{op}`" in page
    for name in sysprep.OPERATIONS:
        assert f"| `{name}` |" in page


def test_ops_command_lists_every_operation():
    runner = CliRunner()
    result = runner.invoke(app, ["ops"])
    assert result.exit_code == 0
    for op in REGISTRY.values():
        assert f"  {op.name} " in result.output
    result = runner.invoke(app, ["ops", "--json"])
    data = json.loads(result.output)
    assert {o["name"] for o in data["operations"]} == set(REGISTRY)
    install = next(o for o in data["operations"] if o["name"] == "install")
    assert install["needs_network"] and install["command"] == "install" and install["syntax"] == "PKG,PKG.."
    assert {s["name"] for s in data["sysprep"] if s["default"]} == set(sysprep.defaults())


def test_string_and_table_forms_agree(ctx):
    assert parse("write", "/etc/motd:hello: world", ctx) == ("/etc/motd", "hello: world")
    assert parse("write", {"path": "/etc/motd", "content": "hello: world"}, ctx) == ("/etc/motd", "hello: world")
    assert parse("write", "/etc/empty:", ctx) == ("/etc/empty", "")
    assert parse("append_line", "/etc/x:line", ctx) == ("/etc/x", "line")
    assert parse("copy", "/a:/b", ctx) == parse("copy", {"from": "/a", "to": "/b"}, ctx) == ("/a", "/b")
    assert parse("link", "/t:/l1:/l2", ctx) == ("/t", ("/l1", "/l2"))
    assert parse("link", {"target": "/t", "links": ["/l1", "/l2"]}, ctx) == ("/t", ("/l1", "/l2"))
    assert parse("chown", "1000:100:/srv", ctx) == (1000, 100, "/srv")
    assert parse("chown", {"path": "/srv", "user": "www-data", "group": "www-data"}, ctx) == ("www-data", "www-data",
                                                                                             "/srv")
    assert parse("update", True, ctx) is True
    with pytest.raises(ValueError, match="takes no argument"):
        parse("update", "yes", ctx)
    with pytest.raises(ValueError, match="unknown key 'contnet'"):
        parse("write", {"path": "/x", "contnet": "y"}, ctx)


def test_chmod_follows_virt_customize_but_refuses_the_ambiguous_form(ctx):
    assert parse("chmod", "0755:/x", ctx) == (0o755, "/x")
    assert parse("chmod", "493:/x", ctx) == (493, "/x")  # decimal, as virt-customize reads it
    assert parse("chmod", {"path": "/x", "mode": 0o640}, ctx) == (0o640, "/x")
    assert parse("chmod", {"path": "/x", "mode": "0640"}, ctx) == (0o640, "/x")
    for bad, problem in (("755:/x", "ambiguous"), ("0789:/x", "not an octal"), ("rwx:/x", "not a permission"),
                         ("99999:/x", "out of range"), ("0755", "PERMISSIONS:FILE")):
        with pytest.raises(ValueError, match=problem):
            parse("chmod", bad, ctx)


def test_edit_parses_the_expression_at_validation(ctx):
    path, expression = parse("edit", "/etc/x:s/a/b/g", ctx)
    assert path == "/etc/x" and not expression.needs_perl
    assert parse("edit", "/etc/x:tr/a-z/A-Z/", ctx)[1].needs_perl
    with pytest.raises(ValueError, match="unterminated"):
        parse("edit", "/etc/x:s/a/b", ctx)


def test_host_paths_resolve_against_the_recipe_dir_and_are_digested(ctx, tmp_path):
    (tmp_path / "f.txt").write_text("x")
    assert parse("upload", "f.txt:/tmp", ctx) == ((tmp_path / "f.txt").resolve(), "/tmp")
    assert ctx.host_files[-1].digest == "sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
    with pytest.raises(ValueError, match="does not exist"):
        parse("upload", "g.txt:/tmp", ctx)
    with pytest.raises(ValueError, match="is not a file"):
        parse("upload", {"from": ".", "to": "/tmp"}, ctx)
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a").write_text("1")
    before = parse("copy_in", {"from": "tree", "to": "/srv"}, ctx) and ctx.host_files[-1].digest
    (tmp_path / "tree" / "a").write_text("2")
    parse("copy_in", "tree:/srv", ctx)
    assert ctx.host_files[-1].digest != before and ctx.host_files[-1].path == (tmp_path / "tree").resolve()


def test_install_accepts_lists_and_comma_strings(ctx):
    assert parse("install", "nginx,curl", ctx) == ("nginx", "curl")
    assert parse("install", ["vim"], ctx) == ("vim",)
    assert parse("install", ["@Xfce Desktop", "kernel-*"], ctx) == ("@Xfce Desktop", "kernel-*")  # specs pass
    for bad in ([], ["$(reboot)"], ["-y"], "x;y", ["a\nb"], [""]):
        with pytest.raises(ValueError):
            parse("install", bad, ctx)
    assert REGISTRY["install"].needs_network and REGISTRY["update"].needs_network
    assert not REGISTRY["write"].needs_network and not REGISTRY["firstboot_install"].needs_network


def test_ssh_inject_forms(ctx, tmp_path):
    (tmp_path / "id.pub").write_text(KEY + "\n")
    assert parse("ssh_inject", "root:file:id.pub", ctx) == ("root", (KEY,))
    assert parse("ssh_inject", f"admin:string:{KEY}", ctx) == ("admin", (KEY,))
    assert parse("ssh_inject", {"user": "root", "file": "id.pub"}, ctx) == ("root", (KEY,))
    with pytest.raises(ValueError, match="OpenSSH public key"):
        parse("ssh_inject", "root:string:not a key", ctx)


def test_ssh_inject_without_selector_takes_the_newest_default_key(ctx, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa.pub").write_text("ssh-rsa AAAAold old\n")
    (home / ".ssh" / "id_ed25519.pub").write_text(KEY + "\n")
    import os
    os.utime(home / ".ssh" / "id_rsa.pub", (1, 1))
    monkeypatch.setenv("HOME", str(home))
    assert parse("ssh_inject", "root", ctx) == ("root", (KEY,))


def test_user_forms(ctx, tmp_path):
    (tmp_path / "id.pub").write_text(KEY + "\n")
    spec = parse("user", {"name": "alice", "groups": ["sudo"], "shell": "/bin/bash", "password": "password:pw",
                          "ssh_keys": ["id.pub", f"string:{KEY}"], "uid": 1500}, ctx)
    assert spec.name == "alice" and spec.groups == ("sudo",) and spec.uid == 1500 and spec.ssh_keys == (KEY, KEY)
    assert "pw" not in spec.describe().replace("password", "")
    assert parse("user", "bob", ctx).name == "bob"
    with pytest.raises(ValueError, match="unknown key 'shel'"):
        parse("user", {"name": "x", "shel": "/bin/sh"}, ctx)
    with pytest.raises(ValueError, match="not a valid user name"):
        parse("user", "Bad Name", ctx)


def test_service_names(ctx):
    assert parse("service_enable", "nginx,fstrim.timer", ctx) == ("nginx", "fstrim.timer")
    assert parse("service_disable", ["ssh"], ctx) == ("ssh",)
    with pytest.raises(ValueError):
        parse("service_enable", "a;reboot", ctx)


def test_password_selectors(ctx, tmp_path):
    (tmp_path / "pw").write_text("s3cret\nignored\n")
    spec = passwords.parse("file:pw", ctx)
    assert spec.kind == "file" and ctx.host_files[-1].digest is None  # a secret: no digest in the manifest
    field = passwords.shadow_field(spec)
    assert field.startswith("$6$") and crypt.crypt("s3cret", field) == field
    assert passwords.shadow_field(passwords.parse("disabled", ctx)) == "*"
    assert passwords.shadow_field(passwords.parse("locked", ctx)) == "!*"
    assert passwords.shadow_field(passwords.parse("locked:disabled", ctx)) == "!*"
    locked = passwords.shadow_field(passwords.parse("locked:password:abc", ctx))
    assert locked.startswith("!$6$") and crypt.crypt("abc", locked[1:]) == locked[1:]
    assert passwords.parse("password:", ctx).source == ""
    assert "abc" not in passwords.parse("password:abc", ctx).describe()
    for bad in ("plain", "file:", "random:x", "disabled:x"):
        with pytest.raises(ValueError):
            passwords.parse(bad, ctx)


@pytest.mark.parametrize("method, prefix", [("md5", "$1$"), ("sha256", "$5$"), ("sha512", "$6$"),
                                            ("yescrypt", "$y$")])
def test_password_crypto(method, prefix):
    hashed = passwords.hash_password("pw", method)
    assert hashed.startswith(prefix) and crypt.crypt("pw", hashed) == hashed
    with pytest.raises(ValueError, match="unknown algorithm"):
        passwords.crypto("sha1")


def test_random_password_is_saved_owner_only(ctx, tmp_path):
    spec = passwords.parse({"random": "out/root.pw"}, ctx)
    field = passwords.shadow_field(spec)
    saved = tmp_path / "out" / "root.pw"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert crypt.crypt(saved.read_text().strip(), field) == field
    assert str(saved) in spec.describe()


def test_plain_random_saves_beside_the_recipe(ctx, tmp_path):
    spec = parse("password", "alice:random", ctx)[1]
    assert spec.save_to == tmp_path / "web.alice.password"
    assert parse("root_password", "locked:random", ctx).save_to == tmp_path / "web.root.password"


def test_shadow_edit_touches_only_the_user():
    shadow = "root:*:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n"
    assert passwords.set_in_shadow(shadow, "root", "$6$x") == "root:$6$x:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n"
    with pytest.raises(KeyError):
        passwords.set_in_shadow(shadow, "nobody", "x")


@pytest.mark.parametrize("manager, action, argv", [
    ("apt", "refresh", ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y", "-o",
                        "Dpkg::Options::=--force-confnew", "update"]),
    ("apt", "install", ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y", "-o",
                        "Dpkg::Options::=--force-confnew", "install", "nginx", "libfoo1:amd64"]),
    ("apt", "uninstall", ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y", "-o",
                          "Dpkg::Options::=--force-confnew", "remove", "nginx", "libfoo1:amd64"]),
    ("apt", "upgrade", ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y", "-o",
                        "Dpkg::Options::=--force-confnew", "upgrade"]),
    ("dnf", "install", ["env", "dnf", "-y", "install", "nginx", "libfoo1:amd64"]),
    ("dnf", "uninstall", ["env", "dnf", "-y", "remove", "nginx", "libfoo1:amd64"]),
    ("dnf", "upgrade", ["env", "dnf", "-y", "--best", "upgrade"]),
    ("yum", "install", ["env", "yum", "-y", "install", "nginx", "libfoo1:amd64"]),
    ("yum", "upgrade", ["env", "yum", "-y", "update"]),
    ("zypper", "install", ["env", "zypper", "-n", "in", "-l", "nginx", "libfoo1:amd64"]),
    ("zypper", "uninstall", ["env", "zypper", "-n", "rm", "nginx", "libfoo1:amd64"]),
    ("zypper", "upgrade", ["env", "zypper", "-n", "update", "-l"]),
    ("apk", "refresh", ["env", "apk", "update"]),
    ("apk", "install", ["env", "apk", "add", "nginx", "libfoo1:amd64"]),
    ("apk", "uninstall", ["env", "apk", "del", "nginx", "libfoo1:amd64"]),
    ("apk", "upgrade", ["env", "apk", "upgrade"]),
    ("pacman", "refresh", ["env", "pacman", "-Sy", "--noconfirm"]),
    ("pacman", "install", ["env", "pacman", "-S", "--noconfirm", "--needed", "nginx", "libfoo1:amd64"]),
    ("pacman", "uninstall", ["env", "pacman", "-R", "--noconfirm", "nginx", "libfoo1:amd64"]),
    ("pacman", "upgrade", ["env", "pacman", "-Su", "--noconfirm"]),
])
def test_package_manager_command_lines(manager, action, argv):
    names = () if action in ("refresh", "upgrade") else ("nginx", "libfoo1:amd64")
    assert packages.manager(manager).argv(action, names) == argv


@pytest.mark.parametrize("manager, message, blamed", [
    ("apt", "E: Unable to locate package nosuchpkg", ["nosuchpkg"]),
    ("apt", "E: Package 'ghost' has no installation candidate", ["ghost"]),
    ("apt", "E: Version '9.9' for 'curl' was not found", ["curl=9.9"]),
    ("dnf", "No match for argument: nosuchpkg\nError: Unable to find a match: nosuchpkg", ["nosuchpkg"]),
    ("yum", "No package nosuchpkg available.", ["nosuchpkg"]),
    ("zypper", "Package 'nosuchpkg' not found.\n'nosuchpkg' not found in package names.", ["nosuchpkg"]),
    ("apk", "ERROR: unable to select packages:\n  nosuchpkg (no such package):", ["nosuchpkg"]),
    ("pacman", "error: target not found: nosuchpkg", ["nosuchpkg"]),
    ("apt", "E: Could not get lock /var/lib/dpkg/lock", []),
])
def test_package_failures_name_the_package(manager, message, blamed):
    names = ("curl=9.9", "nosuchpkg", "ghost")
    assert packages.blame(packages.manager(manager), message, names) == blamed


def test_unsupported_package_manager_is_a_clear_error():
    from imagebuilder.errors import GuestError
    with pytest.raises(GuestError, match="package manager 'portage' is not supported"):
        packages.manager("portage")
