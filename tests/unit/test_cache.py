"""The cache: atomic entries, listing by last use, pruning by age and count, and its CLI."""

from __future__ import annotations

import json
import os
import time

import pytest
from typer.testing import CliRunner

from imagebuilder.cache import Cache
from imagebuilder.cli import app


def add(cache: Cache, kind: str, name: str, age_days: float, size: int = 4096) -> None:
    with cache.writing(kind) as tmp:
        tmp.write_bytes(b"x" * size)
        path = cache.commit(tmp, kind, name)
    then = time.time() - age_days * 86400
    os.utime(path, (then, then))


@pytest.fixture
def cache(tmp_path):
    c = Cache(tmp_path / "c")
    add(c, "images", "sha256-aaa", 40)
    add(c, "images", "sha256-bbb", 10)
    add(c, "bootstrap", "ccc.tar", 1)
    with c.index() as index:
        index["http://x/a.img"] = {"entry": "images/sha256-aaa", "digest": "sha256:aaa"}
    return c


def test_failed_write_leaves_nothing(tmp_path):
    cache = Cache(tmp_path / "c")
    with pytest.raises(RuntimeError):
        with cache.writing("images") as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("cut off")
    assert list((tmp_path / "c" / "images").iterdir()) == []


def test_entries_most_recent_first_with_urls(cache):
    entries = cache.entries()
    assert [e.name for e in entries] == ["ccc.tar", "sha256-bbb", "sha256-aaa"]
    assert entries[-1].urls == ("http://x/a.img",)


def test_lookup_marks_use(cache):
    cache.lookup("images", "sha256-aaa")
    assert cache.entries()[0].name == "sha256-aaa"


def test_prune_older_than(cache):
    removed = cache.prune(older_than=30 * 86400)
    assert [e.name for e in removed] == ["sha256-aaa"]
    assert [e.name for e in cache.entries()] == ["ccc.tar", "sha256-bbb"]
    with cache.index() as index:
        assert index == {}


def test_prune_keep(cache):
    cache.prune(keep=1)
    assert [e.name for e in cache.entries()] == ["ccc.tar"]


def test_cli_list_and_prune(cache):
    runner = CliRunner()
    listed = runner.invoke(app, ["cache", "list", "--json", "--cache-dir", str(cache.root)])
    assert listed.exit_code == 0
    assert [e["name"] for e in json.loads(listed.output)] == ["ccc.tar", "sha256-bbb", "sha256-aaa"]
    pruned = runner.invoke(app, ["cache", "prune", "--older-than", "5d", "--cache-dir", str(cache.root)])
    assert pruned.exit_code == 0 and "removed 2 entries" in pruned.output
    bad = runner.invoke(app, ["cache", "prune", "--older-than", "soon", "--cache-dir", str(cache.root)])
    assert bad.exit_code == 2


def test_cli_prune_keep_keeps_the_most_recently_used(cache):
    runner = CliRunner()
    pruned = runner.invoke(app, ["cache", "prune", "--keep", "2", "--cache-dir", str(cache.root)])
    assert pruned.exit_code == 0 and "removed 1 entries" in pruned.output
    assert [e.name for e in cache.entries()] == ["ccc.tar", "sha256-bbb"]
    assert not (cache.root / "images" / "sha256-aaa").exists()
    bad = runner.invoke(app, ["cache", "prune", "--keep", "-1", "--cache-dir", str(cache.root)])
    assert bad.exit_code == 2 and "--keep must be 0 or more" in bad.output


def test_a_package_set_is_one_entry_listed_and_pruned_whole(cache):
    where = cache.path("packages", "debian~bookworm~x86_64")
    (where / "archives").mkdir(parents=True)
    (where / "archives" / "tree_2.1.0-1_amd64.deb").write_bytes(b"x" * 8192)
    (where / "lists.tar").write_bytes(b"y" * 8192)
    then = time.time() - 20 * 86400
    os.utime(where, (then, then))
    runner = CliRunner()
    listed = json.loads(runner.invoke(app, ["cache", "list", "--json", "--cache-dir", str(cache.root)]).output)
    assert [(e["kind"], e["name"]) for e in listed] == [("bootstrap", "ccc.tar"), ("images", "sha256-bbb"),
                                                        ("packages", "debian~bookworm~x86_64"), ("images", "sha256-aaa")]
    assert listed[2]["bytes"] >= 16384
    assert [e.name for e in cache.prune(older_than=15 * 86400)] == ["debian~bookworm~x86_64", "sha256-aaa"]
    assert not where.exists() and (cache.root / "packages").is_dir()
