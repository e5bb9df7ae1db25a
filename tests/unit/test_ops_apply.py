"""Operations applied to a fake guest (a directory): what each one changes, without a VM."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import warnings

import pytest

from imagebuilder.errors import GuestError
from imagebuilder.guest import firstboot
from imagebuilder.guest.context import GuestContext, shell_line
from imagebuilder.guest.customize import selinux_relabel
from imagebuilder.guest.ops import REGISTRY
from imagebuilder.guest.ops.system import rename_in_hosts
from imagebuilder.progress import Reporter
from imagebuilder.values import ArgContext
from tests.unit.fakeguest import FakeGuest, debian_root

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv0kSLb2nAI6Fr6YQz6UZa0fTwJzYFhS2Z8PHa2Al9k test@imagebuilder"


@pytest.fixture
def guest(tmp_path):
    return FakeGuest(debian_root(tmp_path / "guest"))


@pytest.fixture
def host(tmp_path):
    path = tmp_path / "host"
    path.mkdir()
    return path


@pytest.fixture
def run(guest, host):
    """run(op, value): parse value as a recipe would, then apply it to the fake guest."""
    ctx = GuestContext(guest, Reporter("plain", io.StringIO()), {"package_management": "apt"},
                       {"password_crypto": "sha512"})

    def apply(name, value):
        op = REGISTRY[name]
        op.apply(ctx, op.parse(value, ArgContext(host, host / "recipe.toml", [])))
        return ctx
    apply.ctx = ctx
    return apply


def test_hostname_renames_the_old_name_in_hosts(run, guest):
    run("hostname", "web01.example.org")
    assert guest.cat("/etc/hostname") == "web01.example.org\n"
    assert guest.cat("/etc/hosts") == ("127.0.0.1\tlocalhost\n127.0.1.1\tweb01.example.org\n"
                                       "::1\tlocalhost ip6-localhost\n")


def test_hosts_without_the_old_name_get_a_line():
    assert rename_in_hosts("127.0.0.1 localhost\n", "old", "new") == "127.0.0.1 localhost\n127.0.1.1\tnew\n"
    assert rename_in_hosts("10.0.0.1  old old.lan # old\n", "old", "new") == "10.0.0.1  new old.lan # old\n"
    assert rename_in_hosts("127.0.1.1 new\n", "", "new") == "127.0.1.1 new\n"


def test_timezone(run, guest):
    run("timezone", "Europe/Paris")
    assert guest.readlink("/etc/localtime") == "/usr/share/zoneinfo/Europe/Paris"
    assert guest.cat("/etc/timezone") == "Europe/Paris\n"
    with pytest.raises(GuestError, match="not installed"):
        run("timezone", "Mars/Olympus")


def test_write_append_line_and_line_endings(run, guest):
    run("write", "/etc/a:no newline")
    run("append_line", "/etc/a:second")
    run("append_line", "/etc/a:third")
    assert guest.cat("/etc/a") == "no newline\nsecond\nthird\n"
    run("write", {"path": "/etc/dos", "content": "one\r\ntwo"})
    run("append_line", "/etc/dos:three")
    assert guest.read_file("/etc/dos") == b"one\r\ntwo\r\nthree\r\n"
    run("append_line", "/etc/new:first")
    assert guest.cat("/etc/new") == "first\n"
    run("write", "/etc/empty:")
    run("append_line", "/etc/empty:x")
    assert guest.cat("/etc/empty") == "x\n"


def test_edit_in_python_keeps_mode(run, guest):
    guest.write("/etc/conf", "A=1\nB=2\n")
    guest.chmod(0o640, "/etc/conf")
    run("edit", "/etc/conf:s/^B=.*/B=3/")
    assert guest.cat("/etc/conf") == "A=1\nB=3\n" and guest.mode("/etc/conf") == 0o640
    assert guest.commands == []


def test_edit_with_other_perl_runs_the_guest_perl(run, guest):
    guest.write("/etc/conf", "a\n")
    run("edit", "/etc/conf:$_ = uc")
    assert guest.commands == [["perl", "-p", "-i", "-e", "$_ = uc", "--", "/etc/conf"]]
    os.unlink(guest.host("/usr/bin/perl"))
    with pytest.raises(GuestError, match="no perl"):
        run("edit", "/etc/conf:$_ = uc")
    with pytest.raises(GuestError, match="not a file"):
        run("edit", "/etc/missing:s/a/b/")


def test_mkdir_touch_truncate_delete(run, guest):
    run("mkdir", "/srv/app/conf")
    run("touch", "/srv/app/conf/empty")
    run("write", "/srv/app/data:xyz")
    run("truncate", "/srv/app/data")
    assert guest.cat("/srv/app/data") == "" and guest.is_file("/srv/app/conf/empty")
    with pytest.raises(GuestError, match="does not exist"):
        run("truncate", "/srv/nothing")
    run("write", "/srv/app/x.log:1")
    run("write", "/srv/app/y.log:2")
    run("delete", "/srv/app/*.log")
    run("delete", "/srv/app/conf")
    assert guest.ls("/srv/app") == ["data"]


def test_truncate_recursive(run, guest):
    run("mkdir", "/srv/t/sub")
    run("write", "/srv/t/a:1")
    run("write", "/srv/t/sub/b:22")
    run("truncate_recursive", "/srv/t")
    assert guest.cat("/srv/t/a") == "" and guest.cat("/srv/t/sub/b") == ""


def test_chmod_chown_copy_move_link(run, guest):
    run("write", "/etc/app.conf:x")
    run("chmod", "0600:/etc/app.conf")
    assert guest.mode("/etc/app.conf") == 0o600
    run("chown", "1234:27:/etc/app.conf")
    assert guest.host("/etc/app.conf").stat().st_uid == 1234
    run("chown", {"path": "/etc/app.conf", "user": "root", "group": "sudo"})
    info = guest.host("/etc/app.conf").stat()
    assert (info.st_uid, info.st_gid) == (0, 27)
    with pytest.raises(GuestError, match="user 'alice' does not exist"):
        run("chown", {"path": "/etc/app.conf", "user": "alice", "group": "sudo"})
    run("copy", "/etc/app.conf:/etc/app.copy")
    run("move", "/etc/app.copy:/etc/app.moved")
    assert guest.cat("/etc/app.moved") == "x" and not guest.exists("/etc/app.copy")
    run("link", "/etc/app.conf:/etc/l1:/etc/l2")
    assert guest.readlink("/etc/l1") == guest.readlink("/etc/l2") == "/etc/app.conf"


def test_upload_keeps_host_mode_and_goes_into_directories(run, guest, host):
    (host / "app.conf").write_text("k=v\n")
    os.chmod(host / "app.conf", 0o640)
    run("mkdir", "/etc/app")
    run("upload", "app.conf:/etc/app")
    run("upload", "app.conf:/etc/app/renamed.conf")
    assert guest.cat("/etc/app/app.conf") == guest.cat("/etc/app/renamed.conf") == "k=v\n"
    assert guest.mode("/etc/app/app.conf") == 0o640


def test_copy_in_and_tar_in_need_an_existing_directory(run, guest, host):
    (host / "tree" / "sub").mkdir(parents=True)
    (host / "tree" / "sub" / "f").write_text("data")
    with pytest.raises(GuestError, match="add a mkdir step"):
        run("copy_in", "tree:/srv")
    run("mkdir", "/srv")
    run("copy_in", "tree:/srv")
    assert guest.cat("/srv/tree/sub/f") == "data"
    with tarfile.open(host / "site.tar.gz", "w:gz") as archive:
        archive.add(host / "tree", arcname="site")
    run("tar_in", "site.tar.gz:/srv")
    assert guest.cat("/srv/site/sub/f") == "data" and guest.last_tar_compress == "gzip"


def test_scrub(run, guest):
    run("write", "/root/secret:x")
    run("scrub", "/root/secret")
    assert not guest.exists("/root/secret")
    with pytest.raises(GuestError, match="directory"):
        run("scrub", "/root")


def test_run_command_and_run_script(run, guest, host):
    run("run_command", "echo hi > /x")
    assert guest.shell == [shell_line("echo hi > /x")]
    (host / "plain.sh").write_text("echo plain\n")
    (host / "prog.py").write_text("#!/usr/bin/python3\nprint(1)\n")
    run("run", "plain.sh")
    run("run", "prog.py")
    assert guest.shell[1:] == [shell_line("exec /bin/sh /tmp/imagebuilder-run-abc123"),
                               shell_line("exec /tmp/imagebuilder-run-abc123")]
    assert not guest.exists("/tmp/imagebuilder-run-abc123")


def test_passwords_and_crypto(run, guest, host):
    (host / "root.pw").write_text("rootpw\n")
    run("root_password", "file:root.pw")
    root_hash = guest.cat("/etc/shadow").splitlines()[0].split(":")[1]
    assert root_hash.startswith("$6$") and crypt.crypt("rootpw", root_hash) == root_hash
    run.ctx.state["password_crypto"] = "md5"
    run("password", "nobody:locked:password:x")
    nobody_hash = guest.cat("/etc/shadow").splitlines()[1].split(":")[1]
    assert nobody_hash.startswith("!$1$")
    with pytest.raises(GuestError, match="user 'alice' does not exist"):
        run("password", "alice:password:x")


def test_random_password_saved_and_never_logged(run, guest, host):
    run("root_password", "random")
    saved = (host / "recipe.root.password").read_text().strip()
    root_hash = guest.cat("/etc/shadow").splitlines()[0].split(":")[1]
    assert crypt.crypt(saved, root_hash) == root_hash
    assert stat.S_IMODE((host / "recipe.root.password").stat().st_mode) == 0o600
    assert saved not in run.ctx.reporter.stream.getvalue()


def test_ssh_inject_makes_private_dirs_once(run, guest, host):
    (host / "id.pub").write_text(KEY + "\n")
    run("ssh_inject", "root:file:id.pub")
    run("ssh_inject", f"root:string:{KEY}")
    assert guest.cat("/root/.ssh/authorized_keys") == KEY + "\n"
    assert guest.mode("/root/.ssh") == 0o700 and guest.mode("/root/.ssh/authorized_keys") == 0o600
    with pytest.raises(GuestError, match="does not exist"):
        run("ssh_inject", f"nobody2:string:{KEY}")


def _fake_useradd(guest):
    def useradd(argv):
        name = argv[-1]
        with open(guest.host("/etc/passwd"), "a") as passwd:
            passwd.write(f"{name}:x:1000:1000::/home/{name}:/bin/sh\n")
        with open(guest.host("/etc/shadow"), "a") as shadow:
            shadow.write(f"{name}:!:19000:0:99999:7:::\n")
        guest.mkdir_p(f"/home/{name}")
        return ""
    return useradd


def test_user_creates_then_sets_password_and_keys(run, guest, host):
    (host / "id.pub").write_text(KEY + "\n")
    guest.programs["useradd"] = _fake_useradd(guest)
    run("user", {"name": "alice", "groups": ["sudo", "adm"], "shell": "/bin/bash", "comment": "Alice",
                 "password": "password:alicepw", "ssh_keys": ["id.pub"], "uid": 1000})
    assert guest.commands == [["useradd", "-m", "-G", "sudo,adm", "-s", "/bin/bash", "-c", "Alice", "-u", "1000",
                               "alice"]]
    alice = guest.cat("/etc/shadow").splitlines()[-1].split(":")[1]
    assert crypt.crypt("alicepw", alice) == alice
    assert guest.cat("/home/alice/.ssh/authorized_keys") == KEY + "\n"
    run("user", {"name": "alice", "groups": ["video"]})
    assert guest.commands[-1] == ["usermod", "-a", "-G", "video", "alice"]


def test_services_use_systemctl_or_sysv_tools(run, guest):
    run("service_enable", "nginx,fstrim.timer")
    run("service_disable", "ssh")
    assert guest.commands == [["systemctl", "enable", "nginx"], ["systemctl", "enable", "fstrim.timer"],
                              ["systemctl", "disable", "ssh"]]
    os.unlink(guest.host("/usr/bin/systemctl"))
    guest.write("/usr/sbin/update-rc.d", "")
    run("service_enable", "cron")
    assert guest.commands[-2:] == [["update-rc.d", "cron", "defaults"], ["update-rc.d", "cron", "enable"]]

    def failing(argv):
        raise GuestError("command: Failed to enable unit: Unit file nope.service does not exist.")
    guest.programs["update-rc.d"] = failing
    with pytest.raises(GuestError, match="cannot enable service 'nope'"):
        run("service_enable", "nope")


def test_install_refreshes_once_and_guards_daemons(run, guest):
    seen = []
    guest.programs["apt-get"] = lambda argv: seen.append(guest.exists("/usr/sbin/policy-rc.d")) or ""
    run("install", "tree,sl")
    run("install", ["less"])
    run("uninstall", "nano")
    verbs = [argv[-1] if argv[-1] in ("update", "upgrade") else argv[7] for argv in guest.commands]
    assert verbs == ["update", "install", "install", "remove"]
    assert guest.commands[1][-2:] == ["tree", "sl"]
    assert all(seen) and not guest.exists("/usr/sbin/policy-rc.d")


def test_install_failure_names_the_package(run, guest):
    def apt(argv):
        if "install" in argv:
            raise GuestError("command: E: Unable to locate package nosuchpkg")
        return ""
    guest.programs["apt-get"] = apt
    with pytest.raises(GuestError, match=r"installing package nosuchpkg failed: E: Unable to locate package"):
        run("install", "tree,nosuchpkg")
    assert not guest.exists("/usr/sbin/policy-rc.d")


def test_firstboot_queues_scripts_in_order(run, guest, host):
    (host / "setup.sh").write_text("#!/bin/sh\necho setup\n")
    run("firstboot_command", "touch /fb1")
    run("firstboot", "setup.sh")
    run("firstboot_install", "less")
    scripts = guest.ls(firstboot.SCRIPTS_DIR)
    assert scripts == ["0001-touch", "0002-setup-sh", "0003-install-less"]
    assert guest.cat(f"{firstboot.SCRIPTS_DIR}/0001-touch") == "#!/bin/sh\ntouch /fb1\n"
    assert "apt-get -q -y -o Dpkg::Options::=--force-confnew install less" in \
        guest.cat(f"{firstboot.SCRIPTS_DIR}/0003-install-less")
    assert all(guest.mode(f"{firstboot.SCRIPTS_DIR}/{s}") == 0o755 for s in scripts)
    assert guest.is_symlink(f"/etc/systemd/system/multi-user.target.wants/{firstboot.SERVICE}.service")
    assert guest.readlink(f"/etc/rc2.d/S99{firstboot.SERVICE}") == f"../init.d/{firstboot.SERVICE}"
    guest.mkdir_p(firstboot.DONE_DIR)
    guest.mv(f"{firstboot.SCRIPTS_DIR}/0001-touch", f"{firstboot.DONE_DIR}/0001-touch")
    run("firstboot_command", "echo later")
    assert guest.ls(firstboot.SCRIPTS_DIR)[-1] == "0004-echo"


def test_firstboot_runner_runs_each_script_once_in_order(tmp_path):
    base = tmp_path / "fb"
    (base / "scripts").mkdir(parents=True)
    log = tmp_path / "fb.log"
    runner = firstboot.RUNNER_SCRIPT.replace(firstboot.FIRSTBOOT_DIR, str(base)).replace(
        firstboot.LOG_FILE, str(log)).replace("/run/imagebuilder-firstboot.lock", str(tmp_path / "lock"))
    (base / "runner").write_text(runner)
    out = tmp_path / "out"
    (base / "scripts" / "0002-b").write_text(f"#!/bin/sh\necho b >> {out}\nexit 3\n")
    (base / "scripts" / "0001-a").write_text(f"echo a >> {out}\n")  # no #! line: run by sh
    (base / "scripts" / "0010-c").write_text(f"#!/bin/sh\necho c >> {out}\necho to the log\n")
    for _ in range(2):  # a second boot runs nothing
        subprocess.run(["sh", str(base / "runner")], check=True, timeout=30)
    assert out.read_text() == "a\nb\nc\n"
    assert sorted(os.listdir(base / "done")) == ["0001-a", "0002-b", "0010-c"] and not os.listdir(base / "scripts")
    text = log.read_text()
    assert text.index("0001-a: start") < text.index("0002-b: start") < text.index("0010-c: start")
    assert "0002-b: exit 3" in text and "\nto the log\n" in text
    assert not (tmp_path / "lock").exists()


def test_selinux_relabel_only_where_selinux_is_used(guest):
    ctx = GuestContext(guest, Reporter("plain", io.StringIO()))
    selinux_relabel(ctx)
    assert guest.relabelled == [] and not guest.exists("/.autorelabel")
    guest.mkdir_p("/etc/selinux/targeted/contexts/files")
    guest.write("/etc/selinux/config", "SELINUX=enforcing\nSELINUXTYPE=targeted\n")
    guest.write("/usr/sbin/load_policy", "")
    selinux_relabel(ctx)
    assert guest.exists("/.autorelabel")  # no file_contexts: relabel failed, so at boot
    guest.write("/etc/selinux/targeted/contexts/files/file_contexts", "")
    selinux_relabel(ctx)
    assert guest.relabelled == [("/etc/selinux/targeted/contexts/files/file_contexts", "/")]


def test_passwords_are_set_after_every_other_step(guest, host):
    # virt-customize (customize_run.ml): "Store the passwords and set them all at the end", so a password
    # for a user that a later run-command creates works
    from imagebuilder import recipe
    from imagebuilder.guest.customize import apply_steps

    (host / "users.cmds").write_text("password bob:password:bobpw\nroot-password password:rootpw\n"
                                     "run-command useradd -m bob\n")
    (host / "recipe.toml").write_text('[image]\nname = "x"\n[base.bootstrap]\n[[steps]]\n'
                                      'commands_from_file = "users.cmds"\n[[steps]]\nhostname = "h"\n')
    loaded = recipe.load(host / "recipe.toml")
    guest.programs["sh"] = lambda argv: _fake_useradd(guest)(["useradd", "bob"]) + "imagebuilder-exit-status:0\n"
    log = io.StringIO()
    apply_steps(GuestContext(guest, Reporter("plain", log), {"package_management": "apt"}), loaded)
    bob = guest.cat("/etc/shadow").splitlines()[-1].split(":")
    assert bob[0] == "bob" and crypt.crypt("bobpw", bob[1]) == bob[1]
    order = [line.split("] ", 1)[1].split(":")[0] for line in log.getvalue().splitlines() if line.startswith("[")]
    assert order == ["commands_from_file", "run_command", "hostname", "password", "root_password"]
    assert "[2/5] password: bob: inline password (set after the other steps, as virt-customize does)" in log.getvalue()


def test_passwords_wait_for_the_stretch_that_ends_with_the_last_step():
    from imagebuilder.guest.customize import in_order
    from imagebuilder.recipe.model import Step

    steps = [Step("password", ("bob", None), 1), Step("install", ("tree",), 2), Step("run_command", "x", 3),
             Step("root_password", None, 4), Step("hostname", "h", 5)]
    assert [n for n, _ in in_order(steps, 0, 2)] == [2]  # a checkpoint after the install
    assert [n for n, _ in in_order(steps, 2, 5)] == [3, 5, 1, 4]
    assert [n for n, _ in in_order(steps)] == [2, 3, 5, 1, 4]


def test_files_are_relabelled_unless_a_step_says_no():
    # current virt-customize relabels SELinux guests unless --no-selinux-relabel; --selinux-relabel does nothing
    from imagebuilder.guest.customize import relabels
    from imagebuilder.recipe.model import Step

    assert relabels([]) and relabels([Step("selinux_relabel", True, 1)])
    assert not relabels([Step("hostname", "h", 1), Step("no_selinux_relabel", True, 2)])


def test_a_failing_step_names_its_file_and_line(guest, host):
    from imagebuilder import recipe
    from imagebuilder.guest.customize import apply_steps

    (host / "more.cmds").write_text("# more\nmkdir /srv/x\ntruncate /srv/x/missing\n")
    (host / "recipe.toml").write_text('[image]\nname = "x"\n[base.bootstrap]\n[[steps]]\npassword_crypto = "md5"\n'
                                      '[[steps]]\ncommands_from_file = "more.cmds"\n')
    loaded = recipe.load(host / "recipe.toml")
    ctx = GuestContext(guest, Reporter("plain", io.StringIO()), {"package_management": "apt"})
    with pytest.raises(GuestError) as info:
        apply_steps(ctx, loaded)
    assert str(info.value).startswith(f"{host / 'more.cmds'}:3 (included at {host / 'recipe.toml'}:7): "
                                      "step 4 'truncate' failed: /srv/x/missing does not exist")
    assert ctx.state["password_crypto"] == "md5" and guest.is_dir("/srv/x")


def test_a_failing_shell_command_shows_its_exit_code_and_output(run, guest):
    guest.programs["sh"] = lambda argv: "line one\nan error line\nimagebuilder-exit-status:3\n"
    with pytest.raises(GuestError, match=r"^exit code 3; output: line one \| an error line$"):
        run("run_command", "false")
    guest.programs["sh"] = lambda argv: "all well\nimagebuilder-exit-status:0\n"
    run("run_command", "true")
