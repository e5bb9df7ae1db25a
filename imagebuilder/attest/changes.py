"""What changed between two images: packages added, removed, upgraded and downgraded (from their
SBOMs or read from the images), files that differ, and the recipe and base changes their manifests
record. Pure functions on records; reading images is guest/compare.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from debian.debian_support import Version

from imagebuilder.sbom.model import Package


@dataclass
class PackageChanges:
    """Packages of the second list compared with the first, by name and architecture."""

    added: list[Package] = field(default_factory=list)
    removed: list[Package] = field(default_factory=list)
    upgraded: list[tuple[Package, Package]] = field(default_factory=list)    # (before, after)
    downgraded: list[tuple[Package, Package]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """No package changed."""
        return not (self.added or self.removed or self.upgraded or self.downgraded)

    def as_json(self) -> dict[str, Any]:
        """The changes as JSON: names with versions."""
        return {"added": [{"name": p.key, "version": p.version} for p in self.added],
                "removed": [{"name": p.key, "version": p.version} for p in self.removed],
                "upgraded": [{"name": a.key, "from": a.version, "to": b.version} for a, b in self.upgraded],
                "downgraded": [{"name": a.key, "from": a.version, "to": b.version} for a, b in self.downgraded]}


def packages(before: list[Package], after: list[Package]) -> PackageChanges:
    """Compare two package lists. Versions are ordered as dpkg orders them (epochs, ~ and all),
    which also orders rpm and apk versions sensibly where they differ in numbers only."""
    old = {p.key: p for p in before}
    new = {p.key: p for p in after}
    result = PackageChanges(added=[new[k] for k in sorted(new.keys() - old.keys())],
                            removed=[old[k] for k in sorted(old.keys() - new.keys())])
    for key in sorted(old.keys() & new.keys()):
        a, b = old[key], new[key]
        if a.version == b.version:
            continue
        (result.upgraded if _newer(b.version, a.version) else result.downgraded).append((a, b))
    return result


def _newer(a: str, b: str) -> bool:
    try:
        return Version(a) > Version(b)
    except ValueError:
        return a > b


def one_line(changes: PackageChanges, limit: int = 5) -> str:
    """A line for a log: '3 packages upgraded: openssl 3.0.15-1 → 3.0.16-1, …; 1 added: curl 7.88.1-10'."""
    if changes.empty:
        return "no package changed"
    parts = []
    for label, pairs in (("upgraded", changes.upgraded), ("downgraded", changes.downgraded)):
        if pairs:
            parts.append(f"{_count(len(pairs))} {label}: " + _some([f"{a.name} {a.version} → {b.version}"
                                                                    for a, b in pairs], limit))
    for label, items in (("added", changes.added), ("removed", changes.removed)):
        if items:
            parts.append(f"{_count(len(items))} {label}: " + _some([f"{p.name} {p.version}" for p in items], limit))
    return "; ".join(parts)


def _count(number: int) -> str:
    return f"{number} package{'s' if number != 1 else ''}"


def _some(items: list[str], limit: int) -> str:
    return ", ".join(items[:limit]) + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def table(changes: PackageChanges) -> list[list[str]]:
    """Rows (heading first) for a readable table: CHANGE, PACKAGE, BEFORE, AFTER."""
    rows = [["CHANGE", "PACKAGE", "BEFORE", "AFTER"]]
    rows += [["added", p.key, "-", p.version] for p in changes.added]
    rows += [["removed", p.key, p.version, "-"] for p in changes.removed]
    rows += [["upgraded", a.key, a.version, b.version] for a, b in changes.upgraded]
    rows += [["downgraded", a.key, a.version, b.version] for a, b in changes.downgraded]
    return rows


def files(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    """Paths added, removed and changed between two {path: checksum} listings."""
    return {"added": sorted(after.keys() - before.keys()), "removed": sorted(before.keys() - after.keys()),
            "changed": sorted(k for k in before.keys() & after.keys() if before[k] != after[k])}


def builds(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs in how two versions were built (their version records): recipe, base, steps."""
    notes = []
    if before.get("recipe") != after.get("recipe"):
        notes.append(f"recipe: {_short(before.get('recipe'))} → {_short(after.get('recipe'))}")
    if before.get("base") != after.get("base"):
        notes.append(f"base: {_short(before.get('base'))} → {_short(after.get('base'))}")
    old, new = before.get("steps") or [], after.get("steps") or []
    notes += [f"step removed: {step}" for step in old if step not in new]
    notes += [f"step added: {step}" for step in new if step not in old]
    return notes


def _short(digest: str | None) -> str:
    return digest.split(":", 1)[-1][:12] if digest else "(unknown)"
