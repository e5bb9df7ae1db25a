"""Sizes ("8G", "2GiB") and durations ("300s", "5m") as recipes write them, and sizes for messages."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^([0-9]+)(?:\.([0-9]+))?([KMGT]?)(iB)?$", re.IGNORECASE)
_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}
_MAX_SIZE = 1 << 60
_DURATION = re.compile(r"^([0-9]+)\s*(s|m|h|d)?$")


def parse_size(text: str | int) -> int:
    """Bytes in a size such as 8G, 512M, 2GiB or a plain byte count; binary units (G = GiB, like qemu-img).

    "8GB" and "8 GB" are refused: GB means 10^9 to some and 2^30 to others.
    """
    if isinstance(text, bool):
        raise ValueError("expected a size such as \"8G\"")
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(text)
        if not match:
            raise ValueError(f"'{text}' is not a size; write it like \"8G\", \"512M\" or \"2GiB\"")
        whole, frac, unit, _ = match.groups()
        scale = 1024 ** _POWERS[unit.upper()]
        value = int(whole) * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)
    if value <= 0:
        raise ValueError("a size must be greater than zero")
    if value > _MAX_SIZE:
        raise ValueError("size is too large")
    return value


def parse_duration(text: str | int) -> int:
    """Seconds in a duration such as 300, "300s", "5m", "1h" or "30d"."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as \"300s\"")
    if isinstance(text, int):
        seconds = text
    else:
        match = _DURATION.match(text.strip())
        if not match:
            raise ValueError(f"'{text}' is not a duration; write it like \"300s\", \"5m\" or \"1h\"")
        seconds = int(match.group(1)) * {"s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    return seconds


def format_size(nbytes: float) -> str:
    """1.5 GiB, 512 MiB, 10 KiB: for messages."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}".replace(".0 ", " ")
        nbytes /= 1024
    return f"{nbytes:.1f} GiB"
