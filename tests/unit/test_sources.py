"""The base sources by kind: every kind a recipe accepts has one, and each says where the cache keeps it."""

from __future__ import annotations

import pytest

from imagebuilder.recipe.base import BASE_SOURCES
from imagebuilder.sources import kinds, oci
from imagebuilder.sources.source import Source, source

DIGEST = "sha256:" + "a" * 64


def test_every_base_kind_the_recipe_accepts_has_a_source():
    assert sorted(kinds.SOURCES) == sorted(BASE_SOURCES)
    for kind in BASE_SOURCES:
        assert kinds.lookup(kind).kind == kind


def test_an_unknown_kind_is_a_clear_error():
    with pytest.raises(LookupError, match=r"no base source is declared for kind 'ftp' \(known: bootstrap, oci, "):
        kinds.lookup("ftp")


def test_a_kind_is_declared_once():
    with pytest.raises(RuntimeError, match="base source url is declared twice"):
        source("url")(type("Again", (Source,), {}))


@pytest.mark.parametrize("kind, entry", [
    ("url", ("images", "sha256-" + "a" * 64)),
    ("template", ("images", "sha256-" + "a" * 64)),  # its file is downloaded as a url base is
    ("oci", ("images", oci.cache_name(DIGEST))),
    ("bootstrap", ("bootstrap", "a" * 64 + ".tar")),
    ("path", None),  # used in place: nothing in the cache to share
])
def test_where_the_cache_keeps_each_kind(kind, entry):
    assert kinds.lookup(kind).cache_entry(DIGEST) == entry
