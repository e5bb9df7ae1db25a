"""Operation argument parsing, password handling and command lines, without a VM."""

from __future__ import annotations

import stat
import warnings

import pytest

from imagebuilder.guest import packages, passwords, sysprep
from imagebuilder.guest.args import ArgContext
from imagebuilder.guest.ops import REGISTRY

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt


@pytest.fixture
def ctx(tmp_path):
    return ArgContext(tmp_path)


def parse(name, value, ctx):
    return REGISTRY[name].parse(value, ctx)


def test_string_and_table_forms_agree(ctx):
    assert parse("write", "/etc/motd:hello: world", ctx) == ("/etc/motd", "hello: world")
    assert parse("write", {"path": "/etc/motd", "content": "hello: world"}, ctx) == ("/etc/motd", "hello: world")
    assert parse("append_line", "/etc/x:line", ctx) == ("/etc/x", "line")


def test_host_paths_resolve_against_the_recipe_dir(ctx, tmp_path):
    (tmp_path / "f.txt").write_text("x")
    assert parse("upload", "f.txt:/tmp", ctx) == ((tmp_path / "f.txt").resolve(), "/tmp")
    with pytest.raises(ValueError, match="does not exist"):
        parse("upload", "g.txt:/tmp", ctx)
    with pytest.raises(ValueError, match="is not a file"):
        parse("upload", {"from": ".", "to": "/tmp"}, ctx)
    assert parse("copy_in", {"from": ".", "to": "/srv"}, ctx) == (tmp_path.resolve(), "/srv")


def test_install_accepts_lists_and_comma_strings(ctx):
    assert parse("install", "nginx,curl", ctx) == ("nginx", "curl")
    assert parse("install", ["vim"], ctx) == ("vim",)
    for bad in ([], ["$(reboot)"], ["a b"], "x;y"):
        with pytest.raises(ValueError):
            parse("install", bad, ctx)
    assert REGISTRY["install"].needs_network and not REGISTRY["write"].needs_network


def test_install_command_quotes_package_names():
    line = packages.install_command("apt", ("nginx", "libfoo1:amd64"))
    assert line.endswith("install nginx libfoo1:amd64")
    assert "apt-get" in line and "DEBIAN_FRONTEND=noninteractive" in line
    assert packages.install_command("dnf", ("vim",)) == "dnf -y install vim"


def test_ssh_inject_forms(ctx, tmp_path):
    key = "ssh-ed25519 AAAAC3Nza test"
    (tmp_path / "id.pub").write_text(key + "\n")
    assert parse("ssh_inject", "root:file:id.pub", ctx) == ("root", key)
    assert parse("ssh_inject", f"admin:string:{key}", ctx) == ("admin", key)
    assert parse("ssh_inject", {"user": "root", "file": "id.pub"}, ctx) == ("root", key)
    with pytest.raises(ValueError, match="OpenSSH public key"):
        parse("ssh_inject", "root:string:not a key", ctx)


def test_password_selectors(ctx, tmp_path):
    (tmp_path / "pw").write_text("s3cret\n")
    spec = passwords.parse("file:pw", ctx)
    assert spec.kind == "file"
    field = passwords.shadow_field(spec)
    assert field.startswith("$6$") and crypt.crypt("s3cret", field) == field
    assert passwords.shadow_field(passwords.parse("disabled", ctx)) == "*"
    locked = passwords.shadow_field(passwords.parse("locked:password:abc", ctx))
    assert locked.startswith("!$6$")
    assert "abc" not in passwords.parse("password:abc", ctx).describe()
    with pytest.raises(ValueError):
        passwords.parse("plain", ctx)


def test_random_password_is_saved_owner_only(ctx, tmp_path):
    spec = passwords.parse({"random": "out/root.pw"}, ctx)
    field = passwords.shadow_field(spec)
    saved = tmp_path / "out" / "root.pw"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert crypt.crypt(saved.read_text().strip(), field) == field
    assert str(saved) in spec.describe()


def test_shadow_edit_touches_only_the_user():
    shadow = "root:*:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n"
    assert passwords.set_in_shadow(shadow, "root", "$6$x") == "root:$6$x:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n"
    with pytest.raises(KeyError):
        passwords.set_in_shadow(shadow, "nobody", "x")


def test_sysprep_selection():
    assert sysprep.select([]) == ["machine-id", "ssh-hostkeys", "logfiles"]
    assert sysprep.select(["-logfiles"]) == ["machine-id", "ssh-hostkeys"]
    with pytest.raises(ValueError, match="not a sysprep operation"):
        sysprep.select(["nope"])


def test_every_operation_has_a_doc():
    for op in REGISTRY.values():
        assert op.doc and op.doc[0].isupper() and op.doc.endswith(".")
