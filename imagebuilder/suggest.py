"""The "did you mean" hint of an unknown name."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, choices: Iterable[str], otherwise: str = "") -> str:
    """` (did you mean 'X'?)` for the closest choice, else `otherwise`.

    A choice that is the name without a `no-` (or `no_`) prefix is never suggested: it means the
    opposite (`no-selinux-relabel` is not a typo of `selinux-relabel`)."""
    opposite = name[3:] if name[:3] in ("no-", "no_") else None
    close = difflib.get_close_matches(name, sorted(c for c in choices if c != opposite), n=1)
    return f" (did you mean '{close[0]}'?)" if close else otherwise
