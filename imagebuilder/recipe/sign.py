"""[sign]: the key that signs the build's provenance, its passphrase, and who the builder is."""

from __future__ import annotations

from typing import Any

from imagebuilder import values
from imagebuilder.guest import passwords
from imagebuilder.recipe.model import Sign
from imagebuilder.recipe.tables import Table
from imagebuilder.values import ArgContext


def parse_sign(table: Table | None, ctx: ArgContext) -> Sign | None:
    """[sign]: key (a PEM private key or an exported OpenPGP secret key, relative to the recipe),
    passphrase (file:PATH or env:VAR, never written in the recipe), builder (the builder's id)."""
    if table is None:
        return None
    key = table.convert("key", str, lambda raw: values.host_path(raw, ctx.fresh(), secret=True))
    if key is None:
        raise table.error(None, "missing required key 'key'")
    sign = Sign(key=key, passphrase=table.convert("passphrase", (str, dict), lambda raw: passphrase(raw, ctx)),
                builder=table.get("builder", str))
    table.finish()
    return sign


def passphrase(value: Any, ctx: ArgContext) -> passwords.PasswordSpec:
    """A key's passphrase selector: file:PATH or env:VAR (a passphrase is never written in a recipe)."""
    spec = passwords.parse(value, ctx.fresh())
    if spec.kind not in ("file", "env") or spec.locked:
        raise ValueError("a passphrase is read from file:PATH or env:VAR")
    return spec
