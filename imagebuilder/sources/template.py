"""Base images from virt-builder templates: `[base] template = "debian-12"`.

The name (or an alias) is looked up for the recipe's `arch` in the recipe's `repo`, or else in the
configured repositories in order (see repos.py); the first match wins. Its `file`, relative to the
index, is downloaded through url.fetch, checked against the index's `checksum[sha512]` (over the
bytes as published, compressed or not) and cached by that digest. The template's `expand` and
`lvexpand` hints travel with the image to the resize.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin

from imagebuilder import tomlpos
from imagebuilder.cache import Cache
from imagebuilder.errors import InputError, RecipeError, SourceError
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe
from imagebuilder.sources import repos, url
from imagebuilder.sources.base import BaseImage
from imagebuilder.sources.index import Template


NO_REPOS_HINT = ("add a .conf file to ~/.config/virt-builder/repos.d or /etc/virt-builder/repos.d, "
                 "or name an index with --repo (in a recipe: [base] repo)")


@dataclass(frozen=True)
class Resolved:
    """A template found in a repository."""

    template: Template
    found_in: repos.RepoIndex

    @property
    def file_url(self) -> str:
        """Where the template's file is: its `file` relative to the index URL."""
        return urljoin(self.found_in.repo.uri, self.template.file)


@dataclass(frozen=True)
class Chosen:
    """The template a build uses, and the checksum its file must have (None: read unverified)."""

    found: Resolved
    checksum: str | None


class TemplateNotFound(SourceError):
    """No repository has the template for the architecture (exit 2 unless a repository was unreadable)."""

    def __init__(self, message: str, unreadable: bool):
        super().__init__(message)
        self.exit_code = 1 if unreadable else 2


def resolve(name: str, arch: str, search: repos.Search) -> Resolved:
    """The first template called name (or aliased so) for arch, in repository order."""
    for found in search.found:
        template = found.index.lookup(name, arch)
        if template is not None:
            return Resolved(template, found)
    if not search.found:
        raise TemplateNotFound(f"cannot look up template '{name}': {search.describe()}", unreadable=True)
    others = sorted({a for found in search.found for a in found.index.arches(name)})
    problem = f"template '{name}' for arch {arch} is not in any repository"
    if others:
        problem = f"template '{name}' exists only for arch {', '.join(others)}, not {arch}"
    raise TemplateNotFound(f"{problem}; searched: {search.describe()}", unreadable=bool(search.failed))


def recipe_repos(recipe: Recipe) -> list[repos.Repo]:
    """The recipe's own repository if it names one, else the configured ones."""
    base = recipe.base
    if base.repo:
        return [repos.from_url(base.repo, base.repo_key, str(recipe.file))]
    return repos.configured()


def fetch(chosen: Chosen, cache: Cache, reporter: Reporter) -> BaseImage:
    """The template's image that identify chose, decompressed, with the index's expand hints (cached by
    its checksum)."""
    found, template = chosen.found, chosen.found.template
    image = url.fetch(found.file_url, chosen.checksum, cache, reporter)
    if template.format and image.format != template.format:
        raise SourceError(f"template {template.name}: the index says format={template.format}, but "
                          f"{found.file_url} holds a {image.format} image; refusing it")
    if image.virtual_size != template.size:
        reporter.info(f"warning: template {template.name}: the index says size={template.size}, "
                      f"the image is {image.virtual_size} bytes")
    return dataclasses.replace(image, source=f"template:{template.name}@{template.arch} {found.file_url}",
                               expand=template.expand, lvexpand=template.lvexpand)


def identify(recipe: Recipe, reporter: Reporter) -> Chosen:
    """The recipe's template in the repositories and its file's checksum, without downloading the file
    (refused if a signed index lacks the checksum)."""
    base = recipe.base
    try:
        search = _search(recipe_repos(recipe))
        found = resolve(base.template, base.arch, search)
    except TemplateNotFound as exc:
        if exc.exit_code == 2:
            source = recipe.file.read_text(encoding="utf-8", errors="replace")
            raise RecipeError(str(recipe.file), tomlpos.key_line(source, ("base", "template")),
                              "base.template", exc.message) from None
        raise
    _warnings(search, lambda message: reporter.info(f"warning: {message}"))
    template, where = found.template, found.found_in
    reporter.info(f"template {template.name} ({template.arch}, revision {template.revision}) "
                  f"from {where.repo}{'' if where.verified else ' (index not signed)'}")
    checksum = f"sha512:{template.checksum_sha512}" if template.checksum_sha512 else None
    if checksum is None:
        if where.verified:
            raise SourceError(f"template {template.name} in the signed index of {where.repo} has no "
                              "checksum[sha512], so its file cannot be verified; refusing it")
        if not found.file_url.startswith("file:"):
            raise SourceError(f"template {template.name} has no checksum[sha512] in the unsigned index of "
                              f"{where.repo}, so its download from {found.file_url} cannot be verified; refusing it",
                              hint="add checksum[sha512]= to the index, or sign it and give the repository a gpgkey")
        reporter.info(f"warning: template {template.name} has no checksum; its file is read unverified")
    return Chosen(found, checksum)


@dataclass
class Listing:
    """The templates of several repositories, for `imagebuilder templates list`."""

    search: repos.Search

    def rows(self, hidden: bool = False) -> list[tuple[repos.RepoIndex, Template]]:
        """The templates (without the hidden ones unless asked), by repository, then name and arch."""
        rows = []
        for found in self.search.found:
            templates = sorted((t for t in found.index.templates if hidden or not t.hidden),
                               key=lambda t: (t.name, t.arch))
            rows += [(found, t) for t in templates]
        return rows

    def lines(self) -> list[str]:
        """virt-builder's short listing: os-version, arch, description; hidden templates left out."""
        return [f"{t.name:<24} {t.arch:<10} {t.description}".rstrip() for _, t in self.rows()]

    def as_json(self) -> dict[str, object]:
        """The repositories and every template (with its `hidden` flag, as virt-builder does) as JSON."""
        return {
            "version": 1,
            "sources": [{"id": f.repo.id, "uri": f.repo.uri, "gpgkey": str(f.repo.gpgkey) if f.repo.gpgkey else None,
                         "verified": f.verified} for f in self.search.found]
            + [{"id": r.id, "uri": r.uri, "error": why} for r, why in self.search.failed],
            "templates": [{**t.as_json(), "repository": f.repo.id} for f, t in self.rows(hidden=True)],
        }


def listing(repo_list: list[repos.Repo], warn: Callable[[str], None]) -> Listing:
    """Load every repository for a listing; fail only if none could be read."""
    search = _search(repo_list)
    if not search.found:
        raise SourceError(f"no repository could be read: {search.describe()}")
    _warnings(search, warn)
    return Listing(search)


def notes(name: str, arch: str, repo_list: list[repos.Repo], warn: Callable[[str], None]) -> Resolved:
    """The template `imagebuilder templates notes NAME` shows."""
    search = _search(repo_list)
    found = resolve(name, arch, search)
    _warnings(search, warn)
    return found


def _search(repo_list: list[repos.Repo]) -> repos.Search:
    if not repo_list:
        raise InputError("no virt-builder repository is configured", hint=NO_REPOS_HINT)
    return repos.search(repo_list)


def _warnings(search: repos.Search, warn: Callable[[str], None]) -> None:
    """Tell about the repositories that could not be read and the ones read without a signature check."""
    for _repo, why in search.failed:
        warn(f"skipped: {why}")
    for found in search.found:
        if not found.verified:
            warn(f"repository {found.repo} has no gpgkey; its index is not verified")
