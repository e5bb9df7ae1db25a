"""Property tests: whatever TOML a user writes, the recipe loader either accepts it or raises
the project's own error type with a file and a message; never another exception."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagebuilder import recipe
from imagebuilder.errors import ImageBuilderError

KEYS = ["image", "name", "base", "url", "checksum", "checksum_url", "path", "bootstrap", "suite", "mirror",
        "packages", "disk", "size", "format", "steps", "hostname", "install", "write", "content",
        "root_password", "file", "sysprep", "operations", "output", "pool", "volume", "uri", "domain",
        "memory", "vcpus", "network", "wait", "timeout", "graphics", "x", "stepz"]

scalars = st.one_of(
    st.text(alphabet=string.printable, max_size=20), st.integers(min_value=-10**20, max_value=10**20),
    st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["8G", "1e99", "-1G", "sha256:" + "a" * 64, "http://127.0.0.1/x.img", "none", "ftp://x",
                     "/etc/motd:hi", "bookworm", "qcow2", "agent", "file:missing.pw", "random"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)), max_leaves=12)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")\
            .replace("\t", "\\t").replace("\x0b", "\\u000b").replace("\x0c", "\\f") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"


def render(document: dict) -> str:
    lines = []
    for key, value in document.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in value.items()]
        else:
            lines.insert(0, f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def load_text(tmp_path, text: str) -> None:
    path = tmp_path / "recipe.toml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        recipe.load(path)
    except ImageBuilderError as exc:
        assert exc.exit_code == 2
        assert str(exc).startswith(str(path))
        assert "\n" not in str(exc).strip()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents)
def test_structured_random_recipes(tmp_path, document):
    load_text(tmp_path, render(document))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=string.printable + "[]=\"'{}.#\n", max_size=200))
def test_arbitrary_text(tmp_path, text):
    load_text(tmp_path, text)


VALID = '[image]\nname = "web"\n[base.bootstrap]\n[[steps]]\nhostname = "web01"\n[disk]\nsize = "4G"\n'


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=0, max_value=len(VALID)), st.integers(min_value=0, max_value=8),
       st.text(alphabet=string.printable, max_size=8))
def test_mutated_valid_recipe(tmp_path, position, cut, insert):
    load_text(tmp_path, VALID[:position] + insert + VALID[position + cut:])
