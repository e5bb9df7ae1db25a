"""Templates: recipe keys, lookup through repositories, the fetch contract, the CLI and the expand hint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imagebuilder import recipe
from imagebuilder.cache import Cache
from imagebuilder.cli import app
from imagebuilder.errors import GuestError, RecipeError, SourceError
from imagebuilder.guest import layout
from imagebuilder.guest.context import GuestContext
from imagebuilder.progress import Reporter
from imagebuilder.sources import repos, template
from imagebuilder.sources.base import BaseImage

SHA = "cd" * 64
INDEX = f"""[debian-12]
name=Debian 12
arch=x86_64
file=images/debian-12.raw.xz
checksum[sha512]={SHA}
format=raw
size=2147483648
expand=/dev/sda3
aliases=debian bookworm
notes=Debian 12 (bookworm).
 
 Second paragraph.

[debian-12]
name=Debian 12 for ARM
arch=aarch64
file=debian-12-arm.qcow2
size=2147483648

[secret]
arch=x86_64
file=secret.qcow2
size=1
hidden=true
"""
runner = CliRunner()


@pytest.fixture
def no_config(monkeypatch, tmp_path):
    """Keep the host's /etc/virt-builder and ~/.config out of the test."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-user-config"))
    monkeypatch.setenv("VIRT_BUILDER_DIRS", str(tmp_path / "no-system-config"))


@pytest.fixture
def repo_url(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "index").write_text(INDEX)
    return (tmp_path / "repo" / "index").as_uri()


def write_recipe(tmp_path, base: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(f'[image]\nname = "web"\n\n[base]\n{base}\n\n[disk]\nsize = "4G"\n')
    return path


# --- the recipe ----------------------------------------------------------------------------------

def test_recipe_template_keys(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "repo.asc").write_text("key")
    loaded = recipe.load(write_recipe(tmp_path, 'template = "debian-12"\nrepo = "http://127.0.0.1/index.asc"\n'
                                                'repo_key = "keys/repo.asc"\narch = "aarch64"'))
    base = loaded.base
    assert base.kind == "template"
    assert (base.template, base.repo, base.repo_key, base.arch) == (
        "debian-12", "http://127.0.0.1/index.asc", (tmp_path / "keys" / "repo.asc").resolve(), "aarch64")
    plain = recipe.load(write_recipe(tmp_path, 'template = "fedora-39"'))
    assert (plain.base.arch, plain.base.repo, plain.base.repo_key) == ("x86_64", None, None)


@pytest.mark.parametrize(("base", "line", "key", "words"), [
    ('template = "debian 12"', 5, "base.template", "is not a template name"),
    ('template = "d"\narch = "x86 64"', 6, "base.arch", "is not an architecture imagebuilder builds for"),
    ('template = "d"\nrepo = "ftp://h/index"', 6, "base.repo", "unsupported URL scheme 'ftp'"),
    ('template = "d"\nrepo_key = "k.asc"', 6, "base.repo_key", "signs the index named by 'repo'"),
    ('template = "d"\nrepo = "http://h/index.asc"\nrepo_key = "missing.asc"', 7, "base.repo_key",
     "key 'missing.asc' does not exist"),
    ('template = "d"\nurl = "http://h/x.img"', 5, "base.template", "exclude each other"),
    ('template = "d"\nchecksum = "none"', 6, "base.checksum", "unknown key"),
    ('url = "http://h/x.img"\nchecksum = "none"\nrepo = "http://h/index"', 7, "base.repo", "unknown key"),
    ('template = 12', 5, "base.template", "expected a string"),
])
def test_recipe_template_errors(tmp_path, base, line, key, words):
    with pytest.raises(RecipeError) as info:
        recipe.load(write_recipe(tmp_path, base))
    assert (info.value.line, info.value.key) == (line, key), str(info.value)
    assert words in info.value.problem


# --- lookup --------------------------------------------------------------------------------------

def test_resolve_by_name_alias_and_arch(repo_url):
    search = repos.search([repos.Repo("r", repo_url)])
    found = template.resolve("bookworm", "x86_64", search)
    assert found.template.name == "debian-12" and found.template.arch == "x86_64"
    assert found.file_url == repo_url.rsplit("/", 1)[0] + "/images/debian-12.raw.xz"
    assert template.resolve("debian-12", "aarch64", search).template.file == "debian-12-arm.qcow2"


def test_resolve_takes_the_first_repository(tmp_path, repo_url):
    other = tmp_path / "other-index"
    other.write_text("[debian-12]\narch=x86_64\nfile=other.img\nsize=1\n")
    search = repos.search([repos.Repo("first", other.as_uri()), repos.Repo("second", repo_url)])
    assert template.resolve("debian-12", "x86_64", search).found_in.repo.id == "first"


def test_not_found_names_the_template_and_the_repositories(tmp_path, repo_url):
    search = repos.search([repos.Repo("r", repo_url)])
    with pytest.raises(template.TemplateNotFound) as info:
        template.resolve("debian-13", "x86_64", search)
    assert str(info.value) == (f"template 'debian-13' for arch x86_64 is not in any repository; "
                               f"searched: r ({repo_url}) (3 templates)")
    assert info.value.exit_code == 2
    with pytest.raises(template.TemplateNotFound, match="exists only for arch x86_64, not riscv64"):
        template.resolve("secret", "riscv64", search)
    unreadable = repos.search([repos.Repo("r", repo_url), repos.Repo("gone", (tmp_path / "gone").as_uri())])
    with pytest.raises(template.TemplateNotFound) as info:
        template.resolve("debian-13", "x86_64", unreadable)
    assert info.value.exit_code == 1 and "repository gone" in str(info.value)


# --- fetch (url.fetch replaced by a recorder) ----------------------------------------------------

class FakeFetch:
    def __init__(self, fmt="raw", size=2147483648):
        self.calls, self.fmt, self.size = [], fmt, size

    def __call__(self, url, checksum, cache, reporter):
        self.calls.append((url, checksum))
        return BaseImage(path=Path("/cache/x"), kind="disk", digest=checksum or "sha256:00", source=url,
                         format=self.fmt, virtual_size=self.size)


def fetch_with(monkeypatch, tmp_path, base, fake):
    monkeypatch.setattr(template.url, "fetch", fake)
    loaded = recipe.load(write_recipe(tmp_path, base))
    reporter = Reporter("plain")
    return template.fetch(template.identify(loaded, reporter), Cache(tmp_path / "cache"), reporter)


def test_fetch_passes_file_url_and_checksum_and_keeps_the_expand_hint(monkeypatch, tmp_path, repo_url, no_config):
    fake = FakeFetch()
    image = fetch_with(monkeypatch, tmp_path, f'template = "debian"\nrepo = "{repo_url}"', fake)
    assert fake.calls == [(repo_url.rsplit("/", 1)[0] + "/images/debian-12.raw.xz", f"sha512:{SHA}")]
    assert image.expand == "/dev/sda3" and image.lvexpand is None
    assert image.source.startswith("template:debian-12@x86_64 ")


def test_fetch_uses_the_configured_repositories(monkeypatch, tmp_path, repo_url):
    confdir = tmp_path / "cfg" / "virt-builder" / "repos.d"
    confdir.mkdir(parents=True)
    (confdir / "test.conf").write_text(f"[test]\nuri={repo_url}\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("VIRT_BUILDER_DIRS", str(tmp_path / "none"))
    fake = FakeFetch("qcow2")
    image = fetch_with(monkeypatch, tmp_path, 'template = "debian-12"\narch = "aarch64"', fake)
    assert fake.calls == [(repo_url.rsplit("/", 1)[0] + "/debian-12-arm.qcow2", None)]
    assert image.expand is None


def test_fetch_refuses_a_format_other_than_the_index_says(monkeypatch, tmp_path, repo_url):
    with pytest.raises(SourceError, match="the index says format=raw, but .* holds a qcow2 image"):
        fetch_with(monkeypatch, tmp_path, f'template = "debian-12"\nrepo = "{repo_url}"', FakeFetch("qcow2"))


def test_missing_template_is_a_recipe_error_before_any_download(monkeypatch, tmp_path, repo_url):
    fake = FakeFetch()
    with pytest.raises(RecipeError) as info:
        fetch_with(monkeypatch, tmp_path, f'template = "debian-13"\nrepo = "{repo_url}"', fake)
    assert (info.value.line, info.value.key, info.value.exit_code) == (5, "base.template", 2)
    assert "template 'debian-13' for arch x86_64 is not in any repository; searched: " in info.value.problem
    assert fake.calls == []


def test_no_repository_at_all(monkeypatch, tmp_path, no_config):
    with pytest.raises(Exception, match="no virt-builder repository is configured"):
        fetch_with(monkeypatch, tmp_path, 'template = "debian-12"', FakeFetch())


# --- the command line ----------------------------------------------------------------------------

def test_cli_list_omits_hidden_templates(repo_url, no_config):
    # virt-builder --list: "%-24s %-10s %s" in the index's order, hidden templates left out
    result = runner.invoke(app, ["templates", "list", "--repo", repo_url])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["debian-12                x86_64     Debian 12",
                                          "debian-12                aarch64    Debian 12 for ARM"]


def test_cli_list_json(repo_url, no_config):
    result = runner.invoke(app, ["templates", "list", "--repo", repo_url, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    # virt-builder --list --list-format json: sources [{"uri"}] ("key" when signed); templates in the
    # index's order, hidden ones too, absent fields left out; imagebuilder adds id, format, verified,
    # and per template the repository, file, revision, checksum, format, expand
    assert document["version"] == 1
    assert document["sources"] == [{"uri": repo_url, "id": repo_url, "format": "native", "verified": False}]
    first, arm, secret = document["templates"]
    assert first == {"os-version": "debian-12", "full-name": "Debian 12", "arch": "x86_64", "size": 2147483648,
                     "notes": {"C": "Debian 12 (bookworm).\n\nSecond paragraph."}, "aliases": ["debian", "bookworm"],
                     "hidden": False, "repository": repo_url, "file": "images/debian-12.raw.xz", "revision": 1,
                     "format": "raw", "expand": "/dev/sda3", "checksum": {"sha512": SHA}}
    assert "notes" not in arm and "aliases" not in arm and "osinfo" not in arm
    assert (secret["os-version"], secret["hidden"]) == ("secret", True)
    assert document["skipped"] == []


def test_cli_notes(repo_url, no_config):
    result = runner.invoke(app, ["templates", "notes", "bookworm", "--repo", repo_url])
    assert result.exit_code == 0, result.output
    assert result.stdout == "Debian 12 (bookworm).\n\nSecond paragraph.\n"
    result = runner.invoke(app, ["templates", "notes", "debian-12", "--arch", "aarch64", "--repo", repo_url])
    assert result.stdout == "There are no notes for debian-12\n"  # virt-builder's words
    result = runner.invoke(app, ["templates", "notes", "debian-99", "--repo", repo_url])
    assert result.exit_code == 2 and "template 'debian-99' for arch x86_64 is not in any repository" in result.output


@pytest.mark.parametrize(("env", "expected"), [
    ({"LANG": "ja_JP.UTF-8"}, "ja"), ({"LC_MESSAGES": "ja_JP.UTF-8", "LANG": "C"}, "ja"),
    ({"LC_ALL": "C", "LC_MESSAGES": "ja_JP.UTF-8"}, "C"), ({"LC_ALL": "", "LC_MESSAGES": "ja", "LANG": "C"}, "ja"),
    ({}, "C"),
])
def test_cli_notes_follow_lc_all_lc_messages_then_lang(tmp_path, monkeypatch, no_config, env, expected):
    # virt-builder takes the language of setlocale(LC_MESSAGES): LC_ALL, then LC_MESSAGES, then LANG
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "index").write_text("[t]\narch=x86_64\nfile=t\nsize=1\nnotes=C\nnotes[ja]=ja\n")
    result = runner.invoke(app, ["templates", "notes", "t", "--repo", (tmp_path / "index").as_uri()])
    assert result.stdout == f"{expected}\n"


def test_cli_unreadable_repository(tmp_path, no_config):
    result = runner.invoke(app, ["templates", "list", "--repo", (tmp_path / "none").as_uri()])
    assert result.exit_code == 1 and "no repository could be read" in result.output
    result = runner.invoke(app, ["templates", "list"])
    assert result.exit_code == 2 and "no virt-builder repository is configured" in result.output


def test_cli_a_bad_conf_file_is_skipped_and_the_others_work(tmp_path, monkeypatch, repo_url):
    # virt-builder skips a repos.d file it cannot parse ("[ignored]") and a section without uri=
    confdir = tmp_path / "virt-builder" / "repos.d"
    confdir.mkdir(parents=True)
    (confdir / "bad.conf").write_text("[r]\nuri = http://h/index\n")
    (confdir / "nouri.conf").write_text("[n]\nproxy=off\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("VIRT_BUILDER_DIRS", str(tmp_path / "none"))
    result = runner.invoke(app, ["templates", "list"])
    assert result.exit_code == 2 and "no virt-builder repository is configured" in result.stderr
    assert f"warning: {confdir / 'bad.conf'}:2: no space is allowed before '='" in result.stderr
    assert f"warning: {confdir / 'nouri.conf'}:1: [n]: 'uri=' (the URL of the index) is required" in result.stderr
    (confdir / "good.conf").write_text(f"[good]\nuri={repo_url}\n")
    result = runner.invoke(app, ["templates", "list"])
    assert result.exit_code == 0 and result.stdout.startswith("debian-12 ")


# --- the expand hint in the appliance ------------------------------------------------------------

def parts(*spec):
    return [{"part_num": num, "part_start": start, "part_end": end, "part_size": end - start + 1}
            for num, start, end in spec]


GPT = parts((1, 1 << 20, (2 << 20) - 1), (2, 2 << 20, (130 << 20) - 1), (3, 130 << 20, (2 << 30) - 1))


def test_hint_selects_the_partition_and_must_be_last():
    assert layout._partition_to_expand(GPT, None)["part_num"] == 3
    assert layout._partition_to_expand(GPT, "/dev/sda3")["part_num"] == 3
    assert layout._partition_to_expand(GPT, "/dev/vda3")["part_num"] == 3
    with pytest.raises(GuestError, match=r"hint /dev/sda2 is not the last partition \(/dev/sda3 follows it\)"):
        layout._partition_to_expand(GPT, "/dev/sda2")
    with pytest.raises(GuestError, match=r"names no partition of the disk \(/dev/sda1, /dev/sda2, /dev/sda3\)"):
        layout._partition_to_expand(GPT, "/dev/sda7")
    with pytest.raises(GuestError, match="is not a partition of the first disk"):
        layout._partition_to_expand(GPT, "/dev/sdb1")
    # Partition numbers need not follow the order on disk.
    shuffled = parts((1, 300 << 20, (2 << 30) - 1), (14, 1 << 20, (4 << 20) - 1), (15, 4 << 20, (300 << 20) - 1))
    assert layout._partition_to_expand(shuffled, "/dev/sda1")["part_num"] == 1


class FakeGuest:
    """Records the calls expand_root makes on a GPT disk whose root (ext4) is partition 3; the image
    is the appliance's second disk, as when another disk was attached before it."""

    def __init__(self):
        self.calls = []

    def device(self):
        return "/dev/sdb"

    def part_list(self, device):
        return GPT

    def vfs_type(self, device):
        return "ext4" if device == "/dev/sdb3" else "vfat"

    def part_get_parttype(self, device):
        return "gpt"

    def blockdev_getsz(self, device):
        return (4 << 30) // 512

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *args))


def test_expand_root_grows_the_hinted_partition():
    g = FakeGuest()
    assert layout.expand_root(GuestContext(g, Reporter("plain")), "/dev/sda3") == "/dev/sdb3"
    assert ("part_resize", "/dev/sdb", 3, (4 << 30) // 512 - 34) in g.calls
    assert ("resize2fs", "/dev/sdb3") in g.calls
    with pytest.raises(GuestError, match="not the last partition"):
        layout.expand_root(GuestContext(FakeGuest(), Reporter("plain")), "/dev/sda2")


def test_hidden_templates_can_still_be_used(repo_url):
    search = repos.search([repos.Repo("r", repo_url)])
    assert template.resolve("secret", "x86_64", search).template.hidden


def test_all_repositories_unreadable_is_an_environment_failure(monkeypatch, tmp_path):
    gone = (tmp_path / "gone" / "index").as_uri()
    with pytest.raises(template.TemplateNotFound) as info:
        fetch_with(monkeypatch, tmp_path, f'template = "debian-12"\nrepo = "{gone}"', FakeFetch())
    assert info.value.exit_code == 1
    assert str(info.value).startswith(f"cannot look up template 'debian-12': repository {gone}: cannot read the index")
