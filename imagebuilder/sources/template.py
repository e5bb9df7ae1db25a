"""Base images from virt-builder templates: `[base] template = "debian-12"`.

The name (or an alias) is looked up for the recipe's `arch` in the recipe's `repo`, or else in the
configured repositories, as virt-builder looks it up (see catalog.py). Its `file`, relative to the
index, is downloaded through url.fetch, checked against the index's checksum (over the bytes as
published, compressed or not) and cached by that digest. The template's `expand` and `lvexpand`
hints travel with the image to the resize.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from imagebuilder import tomlpos
from imagebuilder.cache import Cache
from imagebuilder.errors import InputError, RecipeError, SourceError
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe
from imagebuilder.sources import repos, url
from imagebuilder.sources.base import BaseImage
from imagebuilder.sources.catalog import Catalog, Entry, TemplateNotFound
from imagebuilder.sources.source import Identity, source

__all__ = ["Chosen", "Entry", "TemplateNotFound", "fetch", "identify", "listing", "notes", "resolve"]

NO_REPOS_HINT = ("add a .conf file to ~/.config/virt-builder/repos.d or /etc/virt-builder/repos.d, "
                 "or name an index with --repo (in a recipe: [base] repo)")


@dataclass(frozen=True)
class Chosen:
    """The template a build uses, and the checksum its file must have (None: read unverified)."""

    found: Entry
    checksum: str | None


def resolve(name: str, arch: str, search: repos.Search) -> Entry:
    """The template name (or an alias) means for arch in the repositories a search read."""
    return Catalog.of(search).resolve(name, arch)[0]


def recipe_repos(recipe: Recipe, warn: Callable[[str], None]) -> list[repos.Repo]:
    """The recipe's own repository if it names one, else the configured ones."""
    base = recipe.base
    if base.repo:
        return [repos.from_url(base.repo, base.repo_key, str(recipe.file))]
    return repos.configured(warn)


def fetch(chosen: Chosen, cache: Cache, reporter: Reporter) -> BaseImage:
    """The template's image that identify chose, decompressed, with the index's expand hints (cached by
    its checksum)."""
    found, template = chosen.found, chosen.found.template
    image = url.fetch(found.file_url, chosen.checksum, cache, reporter)
    if template.format and image.format != template.format:
        raise SourceError(f"template {template.name}: the index says format={template.format}, but "
                          f"{found.file_url} holds a {image.format} image; refusing it")
    # (a simplestreams `size` is the size of the file, not of the disk)
    if template.size and image.virtual_size != template.size and found.found_in.repo.format == "native":
        reporter.info(f"warning: template {template.name}: the index says size={template.size}, "
                      f"the image is {image.virtual_size} bytes")
    return dataclasses.replace(image, source=f"template:{template.name}@{template.arch} {found.file_url}",
                               expand=template.expand, lvexpand=template.lvexpand)


def identify(recipe: Recipe, reporter: Reporter) -> Chosen:
    """The recipe's template in the repositories and its file's checksum, without downloading the file
    (refused if a signed index lacks the checksum)."""
    base = recipe.base

    def warn(message: str) -> None:
        reporter.info(f"warning: {message}")

    try:
        catalog = Catalog.of(_search(recipe_repos(recipe, warn)))
        _warnings(catalog, warn)
        found, notes_ = catalog.resolve(base.template, base.arch)
    except TemplateNotFound as exc:
        if exc.exit_code == 2:
            source = recipe.file.read_text(encoding="utf-8", errors="replace")
            raise RecipeError(str(recipe.file), tomlpos.key_line(source, ("base", "template")),
                              "base.template", exc.message) from None
        raise
    for note in notes_:
        warn(note)
    template, where = found.template, found.found_in
    reporter.info(f"template {template.name} ({template.arch}, revision {template.revision}) "
                  f"from {where.repo}{'' if where.verified else ' (index not signed)'}")
    if template.checksum is None:
        if where.verified:
            raise SourceError(f"template {template.name} in the signed index of {where.repo} has no "
                              "checksum, so its file cannot be verified; refusing it")
        if not found.file_url.startswith("file:"):
            raise SourceError(f"template {template.name} has no checksum in the unsigned index of "
                              f"{where.repo}, so its download from {found.file_url} cannot be verified; refusing it",
                              hint="add checksum[sha512]= to the index, or sign it and give the repository a gpgkey")
        warn(f"template {template.name} has no checksum; its file is read unverified")
    return Chosen(found, template.checksum)


def listing(repo_list: list[repos.Repo], warn: Callable[[str], None]) -> Catalog:
    """Load every repository for a listing; fail only if none could be read."""
    catalog = Catalog.of(_search(repo_list))
    if not catalog.search.found:
        raise SourceError(f"no repository could be read: {catalog.search.describe()}")
    _warnings(catalog, warn)
    for shadowed in catalog.shadowed:
        warn(shadowed.describe())
    return catalog


def notes(name: str, arch: str, repo_list: list[repos.Repo], warn: Callable[[str], None]) -> Entry:
    """The template `imagebuilder templates notes NAME` shows."""
    catalog = Catalog.of(_search(repo_list))
    found, notes_ = catalog.resolve(name, arch)
    _warnings(catalog, warn)
    for note in notes_:
        warn(note)
    return found


def _search(repo_list: list[repos.Repo]) -> repos.Search:
    if not repo_list:
        raise InputError("no virt-builder repository is configured", hint=NO_REPOS_HINT)
    return repos.search(repo_list)


def _warnings(catalog: Catalog, warn: Callable[[str], None]) -> None:
    """Tell about the repositories that could not be read, the ones read without a signature check, and
    the entries of their indexes that were skipped or read leniently."""
    for _repo, why in catalog.search.failed:
        warn(f"skipped: {why}")
    for found in catalog.search.found:
        if not found.verified:
            warn(f"repository {found.repo} has no gpgkey; its index is not verified")
        for message in found.index.warnings:
            warn(message)


@source("template")
class TemplateSource(url.UrlSource):
    """[base] template: known by the checksum the index gives for its file, which is downloaded and
    cached as a url base is; the fetch starts from the template identify chose."""

    def identify(self, recipe: Recipe, cache: Cache, reporter: Reporter) -> Identity:
        chosen = identify(recipe, reporter)
        return Identity(chosen.checksum, chosen)

    def fetch(self, recipe: Recipe, known: Identity, cache: Cache, reporter: Reporter) -> BaseImage:
        return fetch(known.found, cache, reporter)
