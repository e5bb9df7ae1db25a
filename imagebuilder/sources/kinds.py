"""Every kind of [base] source; importing this module declares them all (see `sources.source`)."""

from __future__ import annotations

from imagebuilder.sources import bootstrap, local, oci, template, url
from imagebuilder.sources.source import SOURCES, Identity, Source

KINDS = (bootstrap, local, oci, template, url)  # the modules whose import declares the sources

__all__ = ["KINDS", "SOURCES", "Identity", "Source", "lookup"]


def lookup(kind: str) -> Source:
    """The source of [base] `kind`; a kind nobody declared is a programming error, said plainly."""
    try:
        return SOURCES[kind]
    except KeyError:
        raise LookupError(f"no base source is declared for kind {kind!r} (known: {', '.join(sorted(SOURCES))})") \
            from None
