"""Licences as SPDX expressions: from Debian's machine-readable copyright files (DEP-5), and checked
when a package database states one (apk).

Debian names licences by short names (GPL-2+, Expat, BSD-3-clause); they become SPDX identifiers
(GPL-2.0-or-later, MIT, BSD-3-Clause), and a name SPDX does not know becomes LicenseRef-NAME, which
the SPDX writer declares with the text the copyright file gives for it.
"""

from __future__ import annotations

import functools
import re

from license_expression import ExpressionError, Licensing, get_spdx_licensing

from imagebuilder.sbom.databases import deb822

FORMAT_PREFIXES = ("https://www.debian.org/doc/packaging-manuals/copyright-format/1.0",
                   "http://www.debian.org/doc/packaging-manuals/copyright-format/1.0",
                   "http://dep.debian.net/deps/dep5")
# Debian short names whose SPDX identifier is not just the name with ".0" and -only/-or-later added
_DEBIAN_NAMES = {"expat": "MIT", "artistic": "Artistic-1.0-Perl", "artistic-1": "Artistic-1.0-Perl",
                 "psf-2": "PSF-2.0", "zope-2.1": "ZPL-2.1", "mpl-1.1": "MPL-1.1", "mpl-2": "MPL-2.0",
                 "public-domain": "LicenseRef-public-domain", "permissive": "LicenseRef-permissive",
                 "openssl": "OpenSSL", "sil-ofl-1.1": "OFL-1.1", "isc": "ISC", "zlib": "Zlib", "bsl-1": "BSL-1.0", "cc0": "CC0-1.0",
                 "lgpl-2+": "LGPL-2.0-or-later", "lgpl-2": "LGPL-2.0-only", "ftl": "FTL", "x11": "X11",
                 "unicode-dfs-2016": "Unicode-DFS-2016", "curl": "curl", "gfdl-nis": "GFDL-1.3-no-invariants-only"}
_VERSIONED_FAMILIES = ("gpl", "lgpl", "agpl", "gfdl")  # the ones SPDX spells with -only / -or-later
_REF = re.compile(r"[^A-Za-z0-9.-]+")


@functools.cache
def spdx_licensing() -> Licensing:
    """license-expression's SPDX licensing, made once: making it, and the parser it builds on first
    use, took 40 ms a package, seconds for a Debian image's SBOM."""
    return get_spdx_licensing()


@functools.cache
def _spdx_ids() -> dict[str, str]:
    """Every SPDX licence identifier, by its lower-case form."""
    return {key.lower(): key for key in spdx_licensing().known_symbols if not key.startswith("LicenseRef-")}


def licence_ref(name: str) -> str:
    """LicenseRef-NAME, NAME reduced to the characters SPDX allows in an identifier."""
    return "LicenseRef-" + (_REF.sub("-", name).strip("-") or "unnamed")


def spdx_id(short_name: str) -> str:
    """The SPDX identifier of one Debian licence short name (GPL-2+ -> GPL-2.0-or-later), or LicenseRef-."""
    name = short_name.strip()
    lower = name.lower()
    if lower in _DEBIAN_NAMES:
        return _DEBIAN_NAMES[lower]
    later = lower.endswith("+")
    base = lower.rstrip("+")
    ids = _spdx_ids()
    family = re.match(r"([a-z]+)-(\d+(?:\.\d+)?)$", base)
    if family and family[1] in _VERSIONED_FAMILIES:
        version = family[2] if "." in family[2] else f"{family[2]}.0"
        found = ids.get(f"{family[1]}-{version}-{'or-later' if later else 'only'}")
        if found:
            return found
    for candidate in (base, f"{base}.0"):
        if candidate in ids and not later:
            return ids[candidate]
        if later and f"{candidate}+" in ids:
            return ids[f"{candidate}+"]
    return licence_ref(name)


def debian_expression(field: str) -> str | None:
    """The SPDX expression of a Debian License field's first line, such as 'GPL-2+ or Artistic, and
    BSD-3-clause' -> '(GPL-2.0-or-later OR Artistic-1.0-Perl) AND BSD-3-Clause'. In Debian's syntax
    'and' binds tighter than 'or', and a comma ends a group that the next operator joins."""
    line = field.split("\n", 1)[0].strip()
    if not line:
        return None
    groups = re.split(r",\s*(?=(?:and|or)\s)", line, flags=re.IGNORECASE)
    expression = _group(groups[0])
    for group in groups[1:]:
        operator, rest = group.split(None, 1)
        expression = f"({expression}) {operator.upper()} ({_group(rest)})"
    return expression


def _group(text: str) -> str:
    alternatives = [[_term(term) for term in re.split(r"\s+and\s+", alternative, flags=re.IGNORECASE) if term]
                    for alternative in re.split(r"\s+or\s+", text.strip(), flags=re.IGNORECASE)]
    if len(alternatives) == 1:
        return " AND ".join(alternatives[0])
    return " OR ".join(terms[0] if len(terms) == 1 else "(" + " AND ".join(terms) + ")" for terms in alternatives)


def _term(text: str) -> str:
    """One licence, possibly with an exception ('GPL-2+ with OpenSSL exception'): an exception SPDX
    lists becomes WITH; any other becomes part of one LicenseRef."""
    match = re.match(r"(.+?)\s+with\s+(.+?)(?:\s+exception)?$", text.strip(), flags=re.IGNORECASE)
    if not match:
        return spdx_id(text)
    exception = _spdx_ids().get(f"{match[2].lower()}-exception")
    licence = spdx_id(match[1])
    if exception and not licence.startswith("LicenseRef-"):
        return f"{licence} WITH {exception}"
    return licence_ref(text)


def from_copyright(text: str) -> tuple[str | None, dict[str, str]]:
    """The declared licence of a package from its Debian copyright file: every licence its Files
    paragraphs name, joined with AND (None when the file is not in the machine-readable format);
    and the texts of its stand-alone License paragraphs, by the LicenseRef- they become."""
    paragraphs = list(deb822(text))
    if not paragraphs or not paragraphs[0].get("format", "").startswith(FORMAT_PREFIXES):
        return None, {}
    found: list[str] = []
    texts: dict[str, str] = {}
    for paragraph in paragraphs:
        field = paragraph.get("license")
        if not field:
            continue
        expression = debian_expression(field)
        if expression is None:
            continue
        if "files" in paragraph or paragraph is paragraphs[0]:
            if expression not in found:
                found.append(expression)
        elif "\n" in field and expression.startswith("LicenseRef-"):
            texts[expression] = field.split("\n", 1)[1]
    if not found:
        return None, texts
    expression = " AND ".join(f"({e})" if " OR " in e else e for e in found)
    return checked(expression), texts


def checked(expression: str | None) -> str | None:
    """expression in SPDX's own spelling, simplified (each licence once, in a stable order), if it
    parses as an SPDX expression (unknown names become LicenseRef-); else one LicenseRef- for the
    whole text; None stays None."""
    if not expression:
        return None
    licensing = spdx_licensing()
    try:
        parsed = licensing.parse(expression, validate=False)
        unknown = {key for key in licensing.unknown_license_keys(parsed) if not key.startswith("LicenseRef-")}
        if unknown:
            text = str(parsed)
            for key in sorted(unknown, key=len, reverse=True):
                text = re.sub(rf"(?<![\w.-]){re.escape(key)}(?![\w.-])", spdx_id(key), text)
            parsed = licensing.parse(text, validate=False)
        return str(parsed.simplify())
    except ExpressionError:
        return licence_ref(expression)
