"""Recipes for unit tests: the smallest valid one plus the lines a test adds, written to tmp_path/recipe.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagebuilder import recipe
from imagebuilder.errors import RecipeError


def minimal(name: str = "web") -> str:
    """The smallest valid recipe: an image name and a bootstrapped Debian base."""
    return f'[image]\nname = "{name}"\n[base.bootstrap]\n'


MINIMAL = minimal()


def write(tmp_path: Path, text: str) -> Path:
    """Write text as tmp_path/recipe.toml and return its path."""
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, name: str = "web") -> recipe.Recipe:
    """Load the minimal recipe of image `name` with text after it."""
    return recipe.load(write(tmp_path, minimal(name) + text))


def error_of(tmp_path: Path, text: str, name: str = "web") -> RecipeError:
    """The RecipeError that loading the minimal recipe with text after it raises (the test fails if none)."""
    with pytest.raises(RecipeError) as info:
        load(tmp_path, text, name)
    return info.value
