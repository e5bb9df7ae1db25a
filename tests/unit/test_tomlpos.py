import textwrap
import tomllib

import pytest

from imagebuilder.tomlpos import key_line, parse_error_line


def doc(text: str) -> str:
    """Dedent and drop the leading newline so line 1 is the first real line."""
    return textwrap.dedent(text).lstrip("\n")


RECIPE = doc(
    """
    # Recipe for a test image; name = "not this one"
    [image]
    name = "web"            # line 3
    size = "10G"

    [base]
    distro = "debian"
    [base.bootstrap]
    packages = [            # line 9
        "openssh-server",
        "curl", # name = "comment in array"
        "vim",
    ]

    [[steps]]               # line 15
    install = ["nginx"]
    [[steps]]
    install = [             # line 18
        "a",
        "b",
        "c",                # line 21
    ]
    write = { path = "/etc/motd", content = "hi" }
    [[steps]]               # line 24
    run = "echo name = x"
    [steps.write]           # line 26
    path = "/etc/issue"

    [output]                # line 29
    format = "qcow2"
    """
)


@pytest.mark.parametrize(
    "path, line",
    [
        (("image",), 2),
        (("image", "name"), 3),
        (("image", "size"), 4),
        (("base",), 6),
        (("base", "distro"), 7),
        (("base", "bootstrap"), 8),
        (("base", "bootstrap", "packages"), 9),
        (("base", "bootstrap", "packages", 0), 10),
        (("base", "bootstrap", "packages", 2), 12),
        (("steps",), 15),
        (("steps", 0), 15),
        (("steps", 0, "install"), 16),
        (("steps", 1), 17),
        (("steps", 1, "install"), 18),
        (("steps", 1, "install", 2), 21),
        (("steps", 1, "write"), 23),
        (("steps", 1, "write", "path"), 23),
        (("steps", 1, "write", "content"), 23),
        (("steps", 2), 24),
        (("steps", 2, "run"), 25),
        (("steps", 2, "write"), 26),
        (("steps", 2, "write", "path"), 27),
        (("output",), 29),
        (("output", "format"), 30),
    ],
)
def test_recipe_paths(path, line):
    assert key_line(RECIPE, path) == line


def test_recipe_is_valid_toml():
    data = tomllib.loads(RECIPE)
    assert data["steps"][2]["write"]["path"] == "/etc/issue"


# -- longest prefix fallback -------------------------------------------------


@pytest.mark.parametrize(
    "path, line",
    [
        (("image", "missing"), 2),  # table header
        (("steps", 0, "nope"), 15),  # array-of-tables entry header
        (("steps", 1, "write", "mode"), 23),  # parent inline table key
        (("image", "name", "deeper"), 3),  # parent key
        (("steps", 7, "install"), 15),  # no such entry: the array itself
        (("base", "bootstrap", "packages", 99), 9),
    ],
)
def test_longest_prefix(path, line):
    assert key_line(RECIPE, path) == line


def test_nothing_matches():
    assert key_line(RECIPE, ("nope",)) is None
    assert key_line(RECIPE, ("nope", "name")) is None
    assert key_line("", ("a",)) is None
    assert key_line(RECIPE, ()) is None


# -- comments and strings ------------------------------------------------------


def test_key_in_earlier_comment_or_string_does_not_match():
    src = doc(
        """
        # memory = 1
        note = "memory = 2"
        other = 'memory = 3'  # memory = 4
        memory = 5
        """
    )
    assert key_line(src, ("memory",)) == 4


def test_hash_inside_string_is_not_a_comment():
    src = doc(
        """
        a = "x # y" ; b = 1
        """
    ).replace(" ; ", "\n")
    assert key_line(src, ("a",)) == 1
    assert key_line(src, ("b",)) == 2


def test_escaped_quotes_in_basic_string():
    src = 'a = "say \\"b = 1\\" \\\\"\nb = 2\n'
    assert tomllib.loads(src)["b"] == 2
    assert key_line(src, ("b",)) == 2


def test_same_key_in_two_tables():
    src = doc(
        """
        [cpu]
        count = 2
        [disk]
        count = 3
        [net.a]
        count = 4
        """
    )
    assert key_line(src, ("cpu", "count")) == 2
    assert key_line(src, ("disk", "count")) == 4
    assert key_line(src, ("net", "a", "count")) == 6
    assert key_line(src, ("count",)) is None


# -- multi-line strings --------------------------------------------------------


def test_multiline_basic_string_contents_are_not_keys():
    src = doc(
        '''
        script = """
        name = "inside"
        [fake]
        name = 1
        """
        name = "real"
        [real]
        x = 1
        '''
    )
    assert key_line(src, ("name",)) == 6
    assert key_line(src, ("fake",)) is None
    assert key_line(src, ("real", "x")) == 8


def test_multiline_literal_string_contents_are_not_keys():
    src = doc(
        """
        script = '''
        name = "inside"
        x = \\'''
        name = 'real'
        """
    )
    assert tomllib.loads(src)["name"] == "real"
    assert key_line(src, ("name",)) == 4


def test_multiline_string_ending_with_extra_quotes():
    src = 'a = """x""""\nb = """y\n"\n"""""\nc = 1\n'
    data = tomllib.loads(src)
    assert data["a"] == 'x"' and data["c"] == 1
    assert key_line(src, ("b",)) == 2
    assert key_line(src, ("c",)) == 5


def test_escaped_triple_quote_in_multiline_basic_string():
    src = 'a = """x\\"""\nb = 1\n"""\nc = 2\n'
    assert tomllib.loads(src) == {"a": 'x"""\nb = 1\n', "c": 2}
    assert key_line(src, ("b",)) is None
    assert key_line(src, ("c",)) == 4


# -- arrays --------------------------------------------------------------------


def test_multiline_array_lines_are_not_keys():
    src = doc(
        """
        packages = [
          "name = 1",  # name = 2
          [ "nested",
            "x" ],
        ]
        name = 3
        """
    )
    assert key_line(src, ("name",)) == 6
    assert key_line(src, ("packages", 1)) == 3
    assert key_line(src, ("packages", 1, 1)) == 4


def test_array_of_inline_tables():
    src = doc(
        """
        steps = [
          { install = ["a"] },
          { write = { path = "/x", content = "y" } },
        ]
        """
    )
    assert key_line(src, ("steps", 0, "install")) == 2
    assert key_line(src, ("steps", 1, "write", "content")) == 3


def test_nested_arrays_of_tables():
    src = doc(
        """
        [[output.targets]]
        name = "a"
        [[output.targets]]
        name = "b"
        [[output.targets.files]]
        path = "/1"
        [[output.targets.files]]
        path = "/2"
        [[output.targets]]
        name = "c"
        [[output.targets.files]]
        path = "/3"
        """
    )
    data = tomllib.loads(src)
    assert data["output"]["targets"][2]["files"][0]["path"] == "/3"
    assert key_line(src, ("output",)) == 1
    assert key_line(src, ("output", "targets", 1, "name")) == 4
    assert key_line(src, ("output", "targets", 1, "files", 1, "path")) == 8
    assert key_line(src, ("output", "targets", 2, "files", 0)) == 11
    assert key_line(src, ("output", "targets", 2, "files", 0, "path")) == 12


# -- keys ----------------------------------------------------------------------


def test_quoted_keys():
    src = doc(
        """
        a = 0
        "a.b" = 1
        'x' = 2
        [ "tab.le" . 'y z' ]
        "caf\\u00e9" = 3
        """
    )
    assert key_line(src, ("a.b",)) == 2
    assert key_line(src, ("a", "b")) == 1  # prefix "a" only
    assert key_line(src, ("x",)) == 3
    assert key_line(src, ("tab.le", "y z")) == 4
    assert key_line(src, ("tab.le", "y z", "café")) == 5


def test_dotted_keys_at_top_level_and_in_table():
    src = doc(
        """
        domain.memory = 1024
        domain . vcpus = 2
        [disk]
        format.type = "raw"
        """
    )
    assert key_line(src, ("domain",)) == 1
    assert key_line(src, ("domain", "memory")) == 1
    assert key_line(src, ("domain", "vcpus")) == 2
    assert key_line(src, ("disk", "format", "type")) == 4


def test_domain_memory_three_ways():
    as_table = "x = 1\n[domain]\nmemory = 1\n"
    as_inline = "x = 1\n[top]\ndomain = { cpus = 1, memory = 2 }\n"
    assert key_line(as_table, ("domain", "memory")) == 3
    assert key_line(as_inline, ("top", "domain", "memory")) == 3


def test_whitespace_in_table_headers():
    src = "[ a . b ]\nc = 1\n[[ d . e ]]\nf = 2\n"
    assert tomllib.loads(src) == {"a": {"b": {"c": 1}}, "d": {"e": [{"f": 2}]}}
    assert key_line(src, ("a", "b", "c")) == 2
    assert key_line(src, ("d", "e", 0, "f")) == 4


def test_super_table_defined_after_sub_table():
    src = "[a.b]\nx = 1\n\n[a]\ny = 2\n"
    assert key_line(src, ("a", "b")) == 1
    assert key_line(src, ("a",)) == 4
    assert key_line(src, ("a", "y")) == 5


def test_crlf_line_endings():
    src = "[a]\r\nx = 1\r\n# c\r\ny = 2\r\n"
    assert key_line(src, ("a", "y")) == 4


def test_scalars_dates_and_comments_after_values():
    src = doc(
        """
        when = 1979-05-27 07:32:00Z  # date with a space
        n = +1_000
        f = -inf
        ok = true
        """
    )
    assert key_line(src, ("when",)) == 1
    assert key_line(src, ("ok",)) == 4


def test_invalid_toml_keeps_what_was_found():
    src = "a = 1\nb = \nc = 3\n"
    assert key_line(src, ("a",)) == 1
    assert key_line(src, ("c",)) is None


# -- property: every leaf resolves to a line containing its key --------------


DOCUMENTS = [
    RECIPE,
    doc(
        """
        title = "x"  # title again: title
        [owner]
        name = "Tom"
        dob = 1979-05-27T07:32:00-08:00
        [database]
        enabled = true
        ports = [ 8000, 8001, 8002 ]
        data = [ ["delta", "phi"], [3.14] ]
        temp_targets = { cpu = 79.5, case = 72.0 }
        [servers]
        [servers.alpha]
        ip = "10.0.0.1"
        role = "frontend"
        [servers.beta]
        ip = "10.0.0.2"
        role = \"\"\"
        ip = "trick"
        \"\"\"
        """
    ),
    doc(
        """
        "quoted.key" = 1
        site."google.com" = true
        fruit.apple.color = "red"
        fruit . apple . smooth = true
        [[products]]
        name = "Hammer"
        sku = 738594937
        [[products]]  # empty table
        [[products]]
        name = "Nail"
        color = "gray"
        [products.dims]
        width = 1
        points = [ { x = 1, y = 2, z = 3 },
                   { x = 7, y = 8, z = 9 } ]
        """
    ),
    doc(
        """
        [[fruits]]
        name = "apple"
        [fruits.physical]
        color = "red"
        [[fruits.varieties]]
        name = "red delicious"
        [[fruits.varieties]]
        name = "granny smith"
        [[fruits]]
        name = "banana"
        [[fruits.varieties]]
        name = "plantain"
        """
    ),
]


def leaf_paths(value, path=()):
    """Paths to leaves, descending into tables and arrays that hold tables."""
    if isinstance(value, dict):
        if not value:
            yield path
        for key, item in value.items():
            yield from leaf_paths(item, path + (key,))
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        for index, item in enumerate(value):
            yield from leaf_paths(item, path + (index,))
    else:
        yield path


@pytest.mark.parametrize("source", DOCUMENTS)
def test_every_leaf_resolves_to_a_line_with_its_key(source):
    lines = source.splitlines()
    paths = list(leaf_paths(tomllib.loads(source)))
    assert len(paths) > 3
    for path in paths:
        line = key_line(source, path)
        assert line is not None, path
        last_key = [p for p in path if isinstance(p, str)][-1]
        assert last_key in lines[line - 1], (path, line, lines[line - 1])


@pytest.mark.parametrize("source", DOCUMENTS)
def test_every_array_element_resolves_to_a_line_containing_it(source):
    def elements(value, path=()):
        if isinstance(value, dict):
            for key, item in value.items():
                yield from elements(item, path + (key,))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from elements(item, path + (index,))
        elif len(path) > 1 and isinstance(path[-1], int):
            yield path, value

    lines = source.splitlines()
    for path, value in elements(tomllib.loads(source)):
        line = key_line(source, path)
        assert str(value) in lines[line - 1], (path, value, line)


# -- parse_error_line ----------------------------------------------------------


@pytest.mark.parametrize(
    "source, line",
    [
        ("a = 1\nb = \n", 2),
        ("a = 1\n\n[x\n", 3),
        ("a = 1\na = 2\n", 2),
        ("x = [1,\n  2\n  3]\n", 3),
        ("x = 'a' 'b'\n", 1),
    ],
)
def test_parse_error_line(source, line):
    with pytest.raises(tomllib.TOMLDecodeError) as info:
        tomllib.loads(source)
    assert parse_error_line(info.value) == line


def test_parse_error_line_without_position():
    assert parse_error_line(tomllib.TOMLDecodeError("bad (at end of document)")) is None
    assert parse_error_line(tomllib.TOMLDecodeError("Oops (at line 7, column 2)")) == 7
