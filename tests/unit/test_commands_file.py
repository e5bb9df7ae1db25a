"""virt-customize commands files: the syntax, line-precise errors, commands_from_file steps and `convert`."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from imagebuilder import recipe
from imagebuilder.cli import app
from imagebuilder.errors import RecipeError
from imagebuilder.guest import commands_file
from imagebuilder.guest.commands_file import Command, Comment
from imagebuilder.values import ArgContext

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv0kSLb2nAI6Fr6YQz6UZa0fTwJzYFhS2Z8PHa2Al9k test@imagebuilder"


def test_syntax_as_virt_customize_reads_it():
    text = ("# a comment\n"
            "\n"
            "   \t \n"
            "   # an indented comment\n"
            "hostname web01\n"
            "  touch /leading/spaces\n"
            "write /etc/x:trailing  \n"
            "write /etc/y:a\\\n"
            "   b\\\n"
            "c\n"
            "update\n"
            "hostname  two spaces\n"
            "edit /etc/z:\\\n"
            "  s/^A=.*/A=1/\n")
    items = commands_file.parse_text(text)
    assert items == [
        Comment(1, "a comment"), Comment(4, "an indented comment"),
        Command(5, "hostname", "web01"),
        Command(6, "touch", "/leading/spaces"),
        Command(7, "write", "/etc/x:trailing  "),
        Command(8, "write", "/etc/y:a\n   b\nc"),
        Command(11, "update", ""),
        Command(12, "hostname", " two spaces"),
        Command(13, "edit", "/etc/z:\n  s/^A=.*/A=1/"),
    ]


def test_a_tab_does_not_separate_the_argument(tmp_path):
    path = tmp_path / "f.cmds"
    path.write_text("hostname\tweb01\n")
    with pytest.raises(RecipeError, match=r"f.cmds:1: 'hostname' is followed by a tab; separate a command"):
        commands_file.parse_commands(path, ArgContext(tmp_path))


@pytest.mark.parametrize("text, line, problem", [
    ("hostname ok\nhostnme x\n", 2, "unknown command 'hostnme' (did you mean 'hostname'?)"),
    ("append_line /x:y\n", 1, "commands files use dashes: 'append-line'"),
    ("\n\ncommands-from-file other.cmds\n", 3, "cannot be used inside a commands file"),
    ("sm-register\n", 1, "subscription-manager is not supported"),
    ("# c\nchmod 755:/etc/x\n", 2, "chmod: '755' is ambiguous"),
    ("write /etc/x\n", 1, "write: expected \"PATH:CONTENT\""),
    ("upload missing.txt:/tmp\n", 1, "upload: host file 'missing.txt' does not exist"),
    ("install ok,bad;rm\n", 1, "install: 'bad;rm' is not a package name"),
    ("root-password password:a\n\npassword root:password:b\n", 3, "the password of 'root' is already set at line 1"),
    ("edit /x:s/a/b\n", 1, "edit: unterminated substitution"),
])
def test_errors_name_the_file_and_line(tmp_path, text, line, problem):
    path = tmp_path / "bad.cmds"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        commands_file.parse_commands(path, ArgContext(tmp_path))
    assert info.value.line == line and problem in info.value.problem
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert info.value.exit_code == 2


def test_a_comment_ending_in_a_backslash_continues_the_comment():
    # virt-customize (String.lines_split, then comments dropped): the next line is part of the comment
    text = "# set up \\\npassword bob:password:x\nhostname web\n"
    assert commands_file.parse_text(text) == [Comment(1, "set up \npassword bob:password:x"),
                                               Command(3, "hostname", "web")]


def test_a_backslash_on_the_last_line_is_accepted():
    # virt-customize reads `write /x:a\` at the end of the file as the argument "/x:a" and a newline
    for text in ("hostname a\nwrite /x:a\\\n", "hostname a\nwrite /x:a\\"):
        assert commands_file.parse_text(text)[-1] == Command(2, "write", "/x:a\n")


def test_a_blank_line_continued_into_a_command():
    # joined first, then stripped: "   \" + "hostname x" is the command "hostname x"
    assert commands_file.parse_text("   \\\nhostname x\n") == [Command(1, "hostname", "x")]


@pytest.mark.parametrize(("spec", "parsed"), [
    # virt-customize passes each comma-separated item to the package manager as one (quoted) argument
    ("@Xfce Desktop", ("@Xfce Desktop",)), ("kernel-*", ("kernel-*",)), ("perl(Foo::Bar)", ("perl(Foo::Bar)",)),
    ("nginx=1.22*,curl", ("nginx=1.22*", "curl")), ("/usr/bin/tree", ("/usr/bin/tree",)),
    ("vim-enhanced >= 9.0", ("vim-enhanced >= 9.0",)), ("python3-?ip", ("python3-?ip",)),
])
def test_package_specs_pass_as_the_package_manager_reads_them(tmp_path, spec, parsed):
    path = tmp_path / "p.cmds"
    path.write_text(f"install {spec}\n")
    assert commands_file.parse_commands(path, ArgContext(tmp_path))[0].arg == parsed


@pytest.mark.parametrize("spec", ["-y", "--allow-unauthenticated", "a;b", "$(id)", "`id`", "a|b", "a&b", "a,,b",
                                  "x'y", "a\\b"])
def test_what_cannot_be_a_package_spec_is_refused(tmp_path, spec):
    path = tmp_path / "p.cmds"
    path.write_text(f"install {spec}\n")
    with pytest.raises(RecipeError, match="is not a package name or spec"):
        commands_file.parse_commands(path, ArgContext(tmp_path))


@pytest.mark.parametrize(("text", "problem"), [
    ("inject-blnsvr /usr/share/virtio-win\n", "'inject-blnsvr': Windows guests are not supported by imagebuilder"),
    ("inject-qemu-ga /usr/share/virtio-win\n", "'inject-qemu-ga': Windows guests are not supported by imagebuilder"),
    ("no-selinux-relable\n", "unknown command 'no-selinux-relable' (did you mean 'no-selinux-relabel'?)"),
    ("no-hostname x\n", "unknown command 'no-hostname' (see `imagebuilder ops`)"),
    ("no-update\n", "unknown command 'no-update' (see `imagebuilder ops`)"),
])
def test_windows_operations_and_suggestions(tmp_path, text, problem):
    # a did-you-mean never suggests the opposite of what was asked (the name without "no-")
    path = tmp_path / "w.cmds"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        commands_file.parse_commands(path, ArgContext(tmp_path))
    assert info.value.problem == problem


def test_no_selinux_relabel_is_a_command(tmp_path):
    path = tmp_path / "s.cmds"
    path.write_text("no-selinux-relabel\nselinux-relabel\n")
    parsed = commands_file.parse_commands(path, ArgContext(tmp_path))
    assert [(p.command.op, p.arg) for p in parsed] == [("no_selinux_relabel", True), ("selinux_relabel", True)]


def test_flag_commands_ignore_their_argument_as_virt_customize_does(tmp_path):
    path = tmp_path / "f.cmds"
    path.write_text("update now\nselinux-relabel\n")
    parsed = commands_file.parse_commands(path, ArgContext(tmp_path))
    assert [(p.command.op, p.arg) for p in parsed] == [("update", True), ("selinux_relabel", True)]


def _project(tmp_path):
    (tmp_path / "cmds").mkdir()
    (tmp_path / "cmds" / "key.pub").write_text(KEY + "\n")
    (tmp_path / "cmds" / "motd").write_text("hello\n")
    (tmp_path / "cmds" / "legacy.cmds").write_text(
        "# legacy setup\nhostname legacy01\nupload motd:/etc/motd\nssh-inject root:file:key.pub\n"
        "install tree\nroot-password random\n")
    (tmp_path / "recipe.toml").write_text(
        '[image]\nname = "web"\n[base.bootstrap]\n\n[[steps]]\ntimezone = "UTC"\n'
        '[[steps]]\ncommands_from_file = "cmds/legacy.cmds"\n[[steps]]\nwrite = "/etc/after:1"\n')
    return tmp_path / "recipe.toml"


def test_commands_from_file_expands_into_steps(tmp_path):
    loaded = recipe.load(_project(tmp_path))
    assert [s.op for s in loaded.steps] == ["timezone", "commands_from_file", "hostname", "upload", "ssh_inject",
                                            "install", "root_password", "write"]
    included = loaded.steps[1]
    assert included.line == 8 and included.host_files[0].path == (tmp_path / "cmds" / "legacy.cmds").resolve()
    hostname, upload = loaded.steps[2], loaded.steps[3]
    assert hostname.line == 2 and hostname.source == (tmp_path / "cmds" / "legacy.cmds").resolve()
    assert upload.arg[0] == (tmp_path / "cmds" / "motd").resolve()  # relative to the commands file
    assert upload.host_files[0].digest.startswith("sha256:")
    assert hostname.where(loaded.file) == f"{hostname.source}:2 (included at {loaded.file}:8)"
    assert loaded.steps[6].arg.save_to == tmp_path / "recipe.root.password"
    assert loaded.network  # install needs it
    record = upload.record()
    assert record["source"] == str(hostname.source) and record["host_files"][0]["sha256"].startswith("sha256:")


def test_commands_file_errors_say_where_they_were_included(tmp_path):
    path = _project(tmp_path)
    (tmp_path / "cmds" / "legacy.cmds").write_text("hostname ok\n\ntimezone Europe/../Paris\n")
    with pytest.raises(RecipeError) as info:
        recipe.load(path)
    assert str(info.value).startswith(f"{(tmp_path / 'cmds' / 'legacy.cmds').resolve()}:3: timezone:")
    assert f"(included at {path}:8)" in str(info.value)


def test_convert_then_load_gives_the_same_steps(tmp_path):
    path = _project(tmp_path)
    expanded = recipe.load(path).steps[2:7]
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "cmds" / "legacy.cmds"), "--base", "base.qcow2"])
    assert result.exit_code == 0, result.output
    converted = tmp_path / "cmds" / "converted.toml"
    (tmp_path / "cmds" / "base.qcow2").write_bytes(b"")
    converted.write_text(result.output)
    loaded = recipe.load(converted)
    assert loaded.name == "legacy" and loaded.sysprep == ()
    assert [(s.op, s.arg) for s in loaded.steps[:-1]] == [(s.op, s.arg) for s in expanded[:-1]]
    assert loaded.steps[-1].arg.save_to == tmp_path / "cmds" / "converted.root.password"
    assert "# legacy setup" in result.output


def test_convert_keeps_the_order_and_the_meaning_of_passwords(tmp_path):
    # virt-customize sets passwords after all other operations; a recipe does too, so the converted
    # recipe keeps the file's order and means the same
    path = tmp_path / "users.cmds"
    path.write_text("password bob:password:pw\nrun-command useradd -m bob\n")
    (tmp_path / "base.qcow2").write_bytes(b"")
    result = CliRunner().invoke(app, ["convert", str(path), "--base", "base.qcow2"])
    assert result.exit_code == 0, result.output
    assert "# As in virt-customize, the passwords are set after all the other steps" in result.output
    (tmp_path / "users.toml").write_text(result.output)
    assert [s.op for s in recipe.load(tmp_path / "users.toml").steps] == ["password", "run_command"]


def test_convert_keeps_awkward_arguments_intact(tmp_path):
    path = tmp_path / "odd.cmds"
    path.write_text('write /etc/q:say "hi" \\\\ bye\\\n\tnext\nupdate\n')
    (tmp_path / "base.qcow2").write_bytes(b"")
    result = CliRunner().invoke(app, ["convert", str(path), "--base", "base.qcow2", "--name", "odd"])
    assert result.exit_code == 0, result.output
    (tmp_path / "odd.toml").write_text(result.output)
    steps = recipe.load(tmp_path / "odd.toml").steps
    assert steps[0].arg == ("/etc/q", 'say "hi" \\\\ bye\n\tnext') and steps[1].op == "update"


def test_convert_reports_errors_with_exit_2(tmp_path):
    path = tmp_path / "bad.cmds"
    path.write_text("hostname ok\nfrobnicate x\n")
    result = CliRunner().invoke(app, ["convert", str(path)])
    assert result.exit_code == 2 and f"{path}:2: unknown command 'frobnicate'" in result.output
    result = CliRunner().invoke(app, ["convert", str(path), "--base", "http://x/y.qcow2"])
    assert result.exit_code == 2 and "--checksum" in result.output


def test_a_home_directory_of_no_user_is_a_clear_error(tmp_path):
    """Found by hypothesis: `run ~0` named the home directory of a user "0", and the parser crashed."""
    from imagebuilder.values import ArgContext, host_path
    with pytest.raises(ValueError, match="host path '~0': no such user's home directory"):
        host_path("~0", ArgContext(tmp_path))
