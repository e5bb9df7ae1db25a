"""The templates of several repositories seen as virt-builder sees them: one list, looked up by name.

virt-builder joins the indexes of its repositories, in order, into one list and then:

- keeps one entry per os-version and arch: the one with the highest revision, the first of equal
  ones (builder.ml, remove_duplicates); imagebuilder says which one it keeps and why;
- resolves a name given to it as an alias first: the first entry (of any arch) that has the alias
  names the os-version, which must then exist for the architecture asked for; imagebuilder looks
  an os-version's own name up as itself (an alias never hides a name) and says so when an alias names
  several templates;
- compares architectures normalized: i686 is i386, amd64 is x86_64.

An entry an index skipped (see index.py) is named when a build asks for it, with its file, line and
problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urljoin

from imagebuilder.errors import SourceError
from imagebuilder.sources import repos
from imagebuilder.sources.index import Template


class TemplateNotFound(SourceError):
    """No repository has the template for the architecture (exit 2 unless a repository was unreadable)."""

    def __init__(self, message: str, unreadable: bool):
        super().__init__(message)
        self.exit_code = 1 if unreadable else 2


@dataclass(frozen=True)
class Entry:
    """A template and the repository it comes from."""

    template: Template
    found_in: repos.RepoIndex

    @property
    def file_url(self) -> str:
        """Where the template's file is: its `file` relative to the index (or simplestreams directory)."""
        return urljoin(self.found_in.index.base, self.template.file)


@dataclass(frozen=True)
class Shadowed:
    """An entry left out because another repository has the same os-version and arch."""

    entry: Entry
    kept: Entry

    def describe(self) -> str:
        """Which one is used, and why."""
        kept, dropped = self.kept, self.entry
        why = "its revision is higher" if compare_revisions(kept.template.revision, dropped.template.revision) > 0 \
            else "its repository comes first and the revisions are equal"
        return (f"template {kept.template.name} ({kept.template.arch}) is in repository {kept.found_in.repo.id} "
                f"(revision {kept.template.revision}) and {dropped.found_in.repo.id} (revision "
                f"{dropped.template.revision}): the one of {kept.found_in.repo.id} is used, {why}")


def compare_revisions(a: int | str, b: int | str) -> int:
    """virt-builder's order of revisions: numbers by value, anything else as text."""
    if isinstance(a, int) and isinstance(b, int):
        return (a > b) - (a < b)
    return (str(a) > str(b)) - (str(a) < str(b))


@dataclass
class Catalog:
    """Every usable template of a search, in repository order then file order, one per os-version and arch."""

    search: repos.Search
    entries: list[Entry] = field(default_factory=list)
    shadowed: list[Shadowed] = field(default_factory=list)

    @classmethod
    def of(cls, search: repos.Search) -> Catalog:
        """The catalog of the repositories a search read, duplicates resolved as virt-builder does."""
        joined = [Entry(t, found) for found in search.found for t in found.index.templates]
        best: dict[tuple[str, str], Entry] = {}
        for entry in joined:
            key = (entry.template.name, entry.template.arch)
            if key not in best or compare_revisions(entry.template.revision, best[key].template.revision) > 0:
                best[key] = entry
        kept = [e for e in joined if best[(e.template.name, e.template.arch)] is e]
        dropped = [Shadowed(e, best[(e.template.name, e.template.arch)]) for e in joined
                   if best[(e.template.name, e.template.arch)] is not e]
        return cls(search, kept, dropped)

    def resolve(self, name: str, arch: str) -> tuple[Entry, list[str]]:
        """The template name (or an alias) means for arch, and warnings about the choice."""
        target, others = self._target(name)
        for entry in self.entries:
            if entry.template.name == target and entry.template.matches_arch(arch):
                notes = [s.describe() for s in self.shadowed if s.kept is entry]
                if others:
                    notes.append(f"alias '{name}' also names {', '.join(others)}; as virt-builder, imagebuilder takes "
                                 f"the first template that has it, {target}")
                return entry, notes
        self._refuse_skipped(name, target, arch)
        if others or target != name:
            also = f"; the alias also names {', '.join(others)}: name the template itself" if others else ""
            raise TemplateNotFound(f"template '{name}' is an alias of '{target}' (the first template that has it), "
                                   f"which is not there for arch {arch}{also}", unreadable=bool(self.search.failed))
        raise self._not_found(name, arch)

    def _target(self, name: str) -> tuple[str, list[str]]:
        """The os-version name means (itself, or the first template that has it as an alias), and the
        other os-versions that have the alias."""
        if any(e.template.name == name for e in self.entries):
            return name, []
        holders = list(dict.fromkeys(e.template.name for e in self.entries if name in e.template.aliases))
        return (holders[0], holders[1:]) if holders else (name, [])

    def _refuse_skipped(self, name: str, target: str, arch: str) -> None:
        for found in self.search.found:
            for entry in found.index.skipped:
                if entry.matches(name, arch) or entry.matches(target, arch):
                    raise SourceError(f"template '{name}' in repository {found.repo} cannot be used: "
                                      f"{found.index.describe_skipped(entry)}")

    def _not_found(self, name: str, arch: str) -> TemplateNotFound:
        search = self.search
        if not search.found:
            return TemplateNotFound(f"cannot look up template '{name}': {search.describe()}", unreadable=True)
        others = sorted({e.template.arch for e in self.entries
                         if e.template.name == name or name in e.template.aliases})
        problem = f"template '{name}' for arch {arch} is not in any repository"
        if others:
            problem = f"template '{name}' exists only for arch {', '.join(others)}, not {arch}"
        return TemplateNotFound(f"{problem}; searched: {search.describe()}", unreadable=bool(search.failed))

    def lines(self) -> list[str]:
        """virt-builder's short listing: os-version, arch, full name; hidden templates left out."""
        return [f"{t.name:<24} {t.arch:<10}" + (f" {t.printable_name}" if t.printable_name else "")
                for t in (e.template for e in self.entries) if not t.hidden]

    def as_json(self) -> dict[str, object]:
        """virt-builder's `--list --list-format json` document, with what imagebuilder knows besides."""
        sources = []
        for found in self.search.found:
            repo = found.repo
            sources.append({**({"key": str(repo.gpgkey)} if repo.gpgkey else {}), "uri": repo.uri, "id": repo.id,
                            "format": repo.format, "verified": found.verified})
        sources += [{"uri": r.uri, "id": r.id, "format": r.format, "error": why} for r, why in self.search.failed]
        return {
            "version": 1,
            "sources": sources,
            "templates": [{**e.template.as_json(), "repository": e.found_in.repo.id, **e.template.details()}
                          for e in self.entries],
            "skipped": [{"repository": f.repo.id, "os-version": s.name, "arch": s.arch, "line": s.line or None,
                         "problem": s.problem} for f in self.search.found for s in f.index.skipped],
        }
