"""Property tests: whatever TOML a user writes, the recipe loader either accepts it or raises
the project's own error type with a file and a message; never another exception."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, event, given, settings
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
                     "/etc/motd:hi", "bookworm", "qcow2", "agent", "file:missing.pw", "random", "env:HOME",
                     "password:x", "../x", "/etc/passwd", "file:///etc/passwd", "https://u:p@h/x"]),
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
    for policy in ({}, {"strict_paths": True, "inline_secrets": False}):
        try:
            recipe.load(path, **policy)
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


# --- commands files ------------------------------------------------------------------------------
# Random virt-customize commands files: the parser either accepts them or raises RecipeError (exit 2,
# one line naming the file), never another exception; a password written in one never appears in an
# error; and what it accepts, `convert` turns into a recipe that loads with the same operations.

from imagebuilder.guest import commands_file  # noqa: E402
from imagebuilder.guest.ops import REGISTRY  # noqa: E402
from imagebuilder.values import ArgContext  # noqa: E402

SECRET = "Pr0p3rtyS3cr3t"
COMMANDS = sorted(op.cli_name for op in REGISTRY.values()) + ["commands-from-file", "sm-register", "append_line",
                                                              "hostnme", "", "#", "-", "ROOT-PASSWORD"]
ARGS = st.one_of(
    st.sampled_from(["", "web01", "/etc/motd:hello", "/etc/motd", "motd:/etc/motd", "missing:/tmp", "0640:/etc/x",
                     "755:/etc/x", "1000:1000:/srv", "nginx,curl", "bad;rm", "Europe/Paris", "s/a/b/", "/x:s/a/b",
                     "root", "root:file:key.pub", "root:string:ssh-ed25519 AAAA x", "../../etc/passwd:/x",
                     "/etc:/srv", "random", "disabled", "locked", "locked:random", "file:secret.pw", "env:HOME",
                     "env:IBTEST_UNSET", "sha512", "yescrypt", "\\", "a\\", "x\\\ny", "\t", "é", "\x00", "setup.sh"]),
    st.text(alphabet=string.printable, max_size=24),
)
SECRET_ARGS = st.sampled_from([f"password:{SECRET}", f"locked:password:{SECRET}", f"root:password:{SECRET}",
                               f"pasword:{SECRET}", SECRET, f"root:{SECRET}"])
LINES = st.one_of(
    st.tuples(st.sampled_from(COMMANDS), st.sampled_from([" ", "\t", "  ", ""]), ARGS).map("".join),
    st.tuples(st.sampled_from(["root-password", "password"]), st.sampled_from([" ", "\t", " \t"]),
              SECRET_ARGS).map("".join),
    st.sampled_from(["", "   ", "# a comment", "  # indented", "\\", "update", "selinux-relabel"]),
)


def _project(tmp_path):
    (tmp_path / "motd").write_text("hello\n")
    (tmp_path / "key.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv0kSLb2nAI6Fr6YQz6UZa0fTwJzYFhS2Z8PHa2Al9k "
                                      "x@y\n")
    (tmp_path / "secret.pw").write_text("from a file\n")
    (tmp_path / "setup.sh").write_text("#!/bin/sh\ntrue\n")
    return tmp_path / "random.cmds"


def parse_cmds(tmp_path, data: bytes, secret_kept: bool = True, **policy) -> list | None:
    path = _project(tmp_path)
    path.write_bytes(data)
    try:
        return commands_file.parse_commands(path, ArgContext(tmp_path.resolve(), **policy))
    except ImageBuilderError as exc:
        assert exc.exit_code == 2
        assert str(exc).startswith(str(path))
        assert "\n" not in str(exc)
        assert SECRET not in str(exc) or not secret_kept
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(LINES, max_size=8), st.booleans(), st.booleans())
def test_random_commands_files(tmp_path, lines, strict, inline):
    text = "\n".join(lines) + "\n"
    policy = {"root": tmp_path.resolve() if strict else None, "inline_secrets": inline}
    # a line continued with '\' swallows the next one: a password there is no longer a password
    kept = not any(before.endswith("\\") for before, line in zip(lines, lines[1:]) if SECRET in line)
    parsed = parse_cmds(tmp_path, text.encode("utf-8", "surrogateescape"), kept, **policy)
    event("accepted" if parsed is not None else "refused")
    if parsed is None:
        return
    for item in parsed:  # what is accepted is described without the password
        assert SECRET not in REGISTRY[item.command.op].describe(item.arg) or not kept
    converted = commands_file.to_recipe(tmp_path / "random.cmds", "converted", ["[base.bootstrap]"])
    (tmp_path / "converted.toml").write_text(converted)
    loaded = recipe.load(tmp_path / "converted.toml")
    assert [s.op for s in loaded.steps] == [p.command.op for p in parsed]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=120))
def test_random_bytes_as_a_commands_file(tmp_path, data):
    parse_cmds(tmp_path, data)
