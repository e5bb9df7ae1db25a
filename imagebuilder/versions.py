"""Versioned output names: a volume name template such as "web-{date}-{n}.qcow2", the history of
the versions a recipe's builds made (kept in its manifest), and which of them retention removes.

Pure functions on names and records; making the alias and deleting volumes is deploy/retention.py.
"""

from __future__ import annotations

import re
import string
from datetime import datetime
from typing import Any

PLACEHOLDERS = {
    "date": "the build's UTC date, YYYYMMDD",
    "time": "the build's UTC time, HHMMSS",
    "digest": "the first 12 hex digits of the image's sha256",
    "n": "the build number: one more than the highest this recipe has made",
}
_PATTERNS = {"date": r"\d{8}", "time": r"\d{6}", "digest": r"[0-9a-f]{12}", "n": r"\d+"}


def fields(template: str) -> list[str]:
    """The placeholders in template, in order. ValueError for an unknown one or a stray brace."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        raise ValueError(f"'{template}' has an unmatched brace; placeholders are written like {{date}}") from None
    found = []
    for _text, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            known = ", ".join(f"{{{key}}}" for key in PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {{{name}}} in '{template}'; the known ones are {known}")
        found.append(name)
    return found


def is_template(name: str) -> bool:
    """Whether a volume name has placeholders (then each build makes a new version)."""
    return bool(fields(name))


def render(template: str, when: datetime, digest: str, number: int) -> str:
    """The name of one version: template with when (UTC), the image digest and the build number."""
    return _fill(template, when, number, short_digest(digest))


def short_digest(digest: str) -> str:
    """The first 12 hex digits of a "sha256:..." digest."""
    return digest.split(":", 1)[-1][:12]


def preview(template: str, when: datetime, number: int) -> str:
    """The name the next version would get, its digest (not known before the build) left as {digest}."""
    return _fill(template, when, number, "{digest}")


def _fill(template: str, when: datetime, number: int, digest: str) -> str:
    return template.format(date=when.strftime("%Y%m%d"), time=when.strftime("%H%M%S"), digest=digest, n=number)


def sample(template: str) -> str:
    """A name the template could give, to check it makes a valid volume name before any build."""
    return render(template, datetime(2000, 1, 1), "sha256:" + "0" * 64, 1)


def matches(template: str, name: str) -> bool:
    """Whether name is one the template gives."""
    pattern = "".join(re.escape(text) + (f"(?:{_PATTERNS[field]})" if field else "")
                      for text, field, _spec, _conv in string.Formatter().parse(template))
    return re.fullmatch(pattern, name) is not None


def next_number(history: list[dict[str, Any]]) -> int:
    """The build number of the next version: one more than any recorded."""
    return max((entry.get("n", 0) for entry in history), default=0) + 1


def present(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recorded versions not deleted yet, oldest first."""
    return [entry for entry in history if entry.get("state") != "deleted"]


def plan(template: str, keep: int | None, history: list[dict[str, Any]], when: datetime,
         held: int | None = None) -> dict[str, Any]:
    """What a build now would do with versions: the next name, and the recorded volumes retention
    would then try to delete (never the held version)."""
    number = next_number(history)
    doomed = [entry for entry in beyond_keep(history + [{"n": number}], keep) if entry["n"] != held] if keep else []
    return {"next": preview(template, when, number),
            "delete": [{key: volume[key] for key in ("uri", "pool", "volume")}
                       for entry in doomed for volume in entry.get("volumes", []) if not volume.get("deleted")]}


def beyond_keep(history: list[dict[str, Any]], keep: int) -> list[dict[str, Any]]:
    """The versions retention removes: all present ones but the newest `keep`."""
    alive = present(history)
    return alive[:max(len(alive) - keep, 0)]


def listing(history: list[dict[str, Any]], alias_names: str | None, held: int | None = None) -> list[dict[str, Any]]:
    """One row per recorded version, newest first: number, time, short digest, state (with why a
    version beyond keep is still there), its volumes, whether the alias names it and is held there."""
    rows = []
    for entry in reversed(history):
        names = [volume["volume"] for volume in entry.get("volumes", []) if not volume.get("deleted")]
        state = entry.get("state", "present")
        if entry.get("kept_because"):
            state = f"kept: {'; '.join(entry['kept_because'])}"
        rows.append({"n": entry.get("n"), "built": entry.get("built", ""), "digest": short_digest(entry.get("digest", "")),
                     "state": state, "volumes": sorted(set(names)),
                     "alias": alias_names is not None and alias_names in names, "held": entry.get("n") == held})
    return rows


def volume_of(entry: dict[str, Any], uri: str, pool: str) -> str | None:
    """The volume of a version in pool at uri, unless it was deleted there."""
    return next((volume["volume"] for volume in entry.get("volumes", [])
                 if (volume["uri"], volume["pool"]) == (uri, pool) and not volume.get("deleted")), None)
