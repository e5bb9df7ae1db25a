"""Several repositories as virt-builder sees them (builder.ml: remove_duplicates, selected_cli_item): one
list in repository and file order, one entry per os-version and arch, names resolved through aliases
first, architectures normalized; and a skipped entry refused only when a build names it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from imagebuilder.cli import app
from imagebuilder.errors import RecipeError, SourceError
from imagebuilder.progress import Reporter
from imagebuilder.recipe import load
from imagebuilder.sources import repos, template
from imagebuilder.sources.catalog import Catalog, TemplateNotFound

SHA = "cd" * 64


def section(name: str, arch: str = "x86_64", *extra: str) -> str:
    lines = [f"[{name}]", f"arch={arch}", f"file={name}-{arch}.img", "size=1", f"checksum={SHA}", *extra]
    return "\n".join(lines) + "\n"


def repo(tmp_path, rid: str, *sections: str) -> repos.Repo:
    path = tmp_path / f"{rid}.index"
    path.write_text("\n".join(sections))
    return repos.Repo(rid, path.as_uri())


def catalog(*repo_list: repos.Repo) -> Catalog:
    return Catalog.of(repos.search(list(repo_list)))


def test_templates_keep_the_order_of_their_files(tmp_path):
    # virt-builder lists the joined indexes as they are, not sorted
    found = catalog(repo(tmp_path, "one", section("zeta"), section("alpha"), section("mid", "aarch64")),
                    repo(tmp_path, "two", section("beta")))
    assert [(e.template.name, e.found_in.repo.id) for e in found.entries] == \
        [("zeta", "one"), ("alpha", "one"), ("mid", "one"), ("beta", "two")]
    assert found.lines() == ["zeta                     x86_64    ", "alpha                    x86_64    ",
                             "mid                      aarch64   ", "beta                     x86_64    "]


def test_the_same_template_in_two_repositories_is_listed_once(tmp_path):
    # virt-builder keeps the highest revision, the first of equal ones
    found = catalog(repo(tmp_path, "first", section("deb", "x86_64", "revision=2"), section("fed")),
                    repo(tmp_path, "second", section("deb", "x86_64", "revision=3"), section("fed")))
    assert [(e.template.name, e.found_in.repo.id) for e in found.entries] == [("fed", "first"), ("deb", "second")]
    assert [s.describe() for s in found.shadowed] == [
        "template deb (x86_64) is in repository second (revision 3) and first (revision 2): the one of second is "
        "used, its revision is higher",
        "template fed (x86_64) is in repository first (revision 1) and second (revision 1): the one of first is "
        "used, its repository comes first and the revisions are equal"]
    entry, notes = found.resolve("deb", "x86_64")
    assert entry.found_in.repo.id == "second" and notes == [found.shadowed[0].describe()]


@pytest.mark.parametrize(("asked", "arch", "expected"), [
    ("c", "i386", ("c", "i686")), ("c", "i686", ("c", "i686")), ("d", "x86_64", ("d", "amd64")),
    ("d", "amd64", ("d", "amd64")),
])
def test_architecture_names_match_as_in_virt_builder(tmp_path, asked, arch, expected):
    found = catalog(repo(tmp_path, "r", section("c", "i686"), section("d", "amd64")))
    entry, _notes = found.resolve(asked, arch)
    assert (entry.template.name, entry.template.arch) == expected


def test_an_alias_resolves_to_the_first_template_that_has_it(tmp_path):
    # virt-builder: the alias names the os-version of the first entry that has it (any arch), which must
    # then exist for the arch asked for ("cannot find os-version 'a' with architecture 'aarch64'")
    found = catalog(repo(tmp_path, "r", section("a", "x86_64", "aliases=x"), section("a", "aarch64", "aliases=x"),
                         section("b", "aarch64", "aliases=y"), section("c", "x86_64", "aliases=y")))
    assert found.resolve("x", "aarch64")[0].template.arch == "aarch64"  # one os-version for both arches
    entry, notes = found.resolve("y", "aarch64")
    assert entry.template.name == "b" and notes == [
        "alias 'y' also names c; as virt-builder, imagebuilder takes the first template that has it, b"]
    with pytest.raises(TemplateNotFound) as info:
        found.resolve("y", "x86_64")
    assert str(info.value) == ("template 'y' is an alias of 'b' (the first template that has it), which is not there "
                               "for arch x86_64; the alias also names c: name the template itself")
    assert info.value.exit_code == 2


def test_a_name_is_never_an_alias_across_repositories(tmp_path):
    found = catalog(repo(tmp_path, "one", section("a")), repo(tmp_path, "two", section("b", "x86_64", "aliases=a")))
    assert found.resolve("a", "x86_64")[0].template.name == "a"


def test_a_skipped_entry_is_refused_only_when_it_is_asked_for(tmp_path):
    bad = "[broken]\narch=x86_64\nfile=b.img\nsize=1\nchecksum=abc\naliases=br\n"
    source = repo(tmp_path, "r", section("good"), bad)
    found = catalog(source)
    assert found.resolve("good", "x86_64")[0].template.name == "good"
    for name in ("broken", "br"):
        with pytest.raises(SourceError) as info:
            found.resolve(name, "x86_64")
        assert str(info.value) == (f"template '{name}' in repository {source} cannot be used: {source.uri}:11: "
                                   "[broken] field 'checksum' must be 128 hex digits (SHA-512), got 3 characters")
        assert info.value.exit_code == 1


def test_a_build_from_a_good_entry_warns_about_the_bad_ones(tmp_path, monkeypatch):
    source = repo(tmp_path, "r", section("good"), "[bad]\narch=x86_64\nfile=b\nsize=0x10\n",
                  section("good"[::-1], "x86_64", "expand=sda2"))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[image]\nname = "t"\n[base]\ntemplate = "good"\nrepo = "{source.uri}"\n')
    messages = []
    reporter = Reporter("plain")
    monkeypatch.setattr(reporter, "info", messages.append)
    chosen = template.identify(load(recipe), reporter)
    assert chosen.found.template.name == "good" and chosen.checksum == f"sha512:{SHA}"
    assert f"warning: {source.uri}:10: [bad] field 'size' must be a whole number, not '0x10'; this template is " \
           "skipped" in messages
    assert any("'sda2' is read as /dev/sda2" in m for m in messages)
    recipe.write_text(recipe.read_text().replace('"good"', '"bad"'))
    with pytest.raises(SourceError, match=r"template 'bad' .* cannot be used: .*:10: \[bad\] field 'size'"):
        template.identify(load(recipe), reporter)
    recipe.write_text(recipe.read_text().replace('"bad"', '"none"'))
    with pytest.raises(RecipeError, match="key 'base.template': template 'none' for arch x86_64 is not in any"):
        template.identify(load(recipe), reporter)


def test_cli_lists_a_repository_with_bad_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    monkeypatch.setenv("VIRT_BUILDER_DIRS", str(tmp_path / "none"))
    source = repo(tmp_path, "r", section("good"), "[bad]\narch=x86_64\nfile=b\nsize=1\nrevision=1\nrevision=2\n",
                  section("other"))
    result = CliRunner().invoke(app, ["templates", "list", "--repo", source.uri])
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["good", "other"]
    assert f"warning: {source.uri}:12: [bad] field 'revision' is given twice (first at line 11); this template " \
           "is skipped" in result.stderr
    result = CliRunner().invoke(app, ["templates", "list", "--repo", source.uri, "--json"])
    assert json.loads(result.stdout)["skipped"] == [
        {"repository": source.uri, "os-version": "bad", "arch": "x86_64", "line": 12,
         "problem": "field 'revision' is given twice (first at line 11)"}]
