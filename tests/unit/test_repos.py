"""virt-builder repositories: repos.d files, and indexes read signed, unsigned or tampered with."""

from __future__ import annotations

import pytest

from imagebuilder.errors import InputError, SourceError
from imagebuilder.sources import repos
from imagebuilder.sources.repos import Repo
from tests.signing import make_key

INDEX = """[debian-12]
name=Debian 12
arch=x86_64
file=debian-12.qcow2
size=2147483648
notes=Line one
 
 - a dash line
"""


def test_conf_file_fields(tmp_path):
    conf = tmp_path / "test.conf"
    conf.write_text("# two repositories\n[one]\nuri=https://example.com/builder/index.asc\n"
                    "gpgkey=file:///etc/keys/one.gpg\nformat=native\nproxy=off\n\n"
                    "[two]\nuri=file:///srv/index\ngpgkey=keys/two.asc\nsomething=ignored\n")
    warnings = []
    one, two = repos.parse_conf(conf.read_text(), conf, warnings.append)
    assert one == Repo(id="one", uri="https://example.com/builder/index.asc", gpgkey=repos.Path("/etc/keys/one.gpg"),
                       format="native", proxy="off", origin=f"{conf}:2")
    assert two.gpgkey == tmp_path / "keys" / "two.asc" and two.proxy is None and two.format == "native"
    assert str(one) == "one (https://example.com/builder/index.asc)" and warnings == []


@pytest.mark.parametrize(("text", "line", "words"), [
    # virt-builder (sources.ml): "no 'uri' entry for 'a' in FILE, skipping it"; an unknown format is
    # skipped; a file with a syntax error is skipped ("[ignored]"). imagebuilder skips the section at fault.
    ("[a]\ngpgkey=file:///k\n", 1, "'uri=' (the URL of the index) is required"),
    ("[a]\nuri=\n", 2, "'uri=' (the URL of the index) is required"),
    ("[a]\nuri=ftp://h/index\n", 2, "unsupported URL scheme 'ftp'"),
    ("[a]\nuri=http://h/index\nformat=yaml\n", 3, "unknown format 'yaml'"),
    ("[a]\nuri=http://h/index\ngpgkey=https://h/key\n", 3, "gpgkey must be a file:// URL or a path"),
    ("[a]\nuri=http://h/index\nuri=http://h/other\n", 3, "'uri' is given twice"),
    ("[a]\nuri=http://h/index\ngpgkey = file:///k\n", 3, "no space is allowed before '='"),
])
def test_a_broken_section_is_skipped_the_others_work(tmp_path, text, line, words):
    conf = tmp_path / "bad.conf"
    warnings = []
    found = repos.parse_conf(text + "[good]\nuri=http://h/good\n", conf, warnings.append)
    assert [r.id for r in found] == ["good"]
    (warning,) = warnings
    assert warning.startswith(f"{conf}:{line}: ") and words in warning and warning.endswith("this repository is skipped")


def test_a_repository_defined_twice_in_one_file_keeps_the_first(tmp_path):
    warnings = []
    found = repos.parse_conf("[a]\nuri=http://h/i\n\n[a]\nuri=http://h/j\n", tmp_path / "c.conf", warnings.append)
    assert [r.uri for r in found] == ["http://h/i"] and "defined twice (first at line 1)" in warnings[0]


def test_a_plain_path_is_a_source_like_a_file_url(tmp_path, monkeypatch):
    # libguestfs reads a URI without a scheme as a local path (file protocol)
    monkeypatch.chdir(tmp_path)
    found = repos.parse_conf(f"[abs]\nuri={tmp_path}/repo/index\n[rel]\nuri=repo/index\n", tmp_path / "c.conf",
                             lambda w: pytest.fail(w))
    assert [r.uri for r in found] == [(tmp_path / "repo" / "index").as_uri()] * 2
    assert repos.from_url("repo/index", None, "--repo").uri == (tmp_path / "repo" / "index").as_uri()
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "index").write_text(INDEX)
    assert repos.load(found[0]).index.templates[0].name == "debian-12"


def test_config_dirs_follow_virt_builder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("VIRT_BUILDER_DIRS", f"{tmp_path}/a:{tmp_path}/b")
    assert repos.config_dirs() == [tmp_path / "cfg/virt-builder/repos.d", tmp_path / "a/virt-builder/repos.d",
                                   tmp_path / "b/virt-builder/repos.d"]
    monkeypatch.delenv("VIRT_BUILDER_DIRS")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert repos.config_dirs() == [tmp_path / ".config/virt-builder/repos.d", repos.Path("/etc/virt-builder/repos.d")]


@pytest.fixture
def confdirs(monkeypatch, tmp_path):
    """(the user's repos.d, the system's), both empty and the only ones read."""
    user = tmp_path / "cfg" / "virt-builder" / "repos.d"
    system = tmp_path / "sys" / "virt-builder" / "repos.d"
    user.mkdir(parents=True)
    system.mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("VIRT_BUILDER_DIRS", str(tmp_path / "sys"))
    return user, system


def test_configured_reads_conf_files_in_order_user_first(confdirs):
    user, system = confdirs
    (system / "a.conf").write_text("[shared]\nuri=http://system/index\n\n[sys-only]\nuri=http://sys/index\n")
    (system / "b.conf").write_text("[later]\nuri=http://later/index\n")
    (system / "ignored.txt").write_text("not a conf file")
    (user / "mine.conf").write_text("[shared]\nuri=http://user/index\n")
    found = repos.configured(lambda w: pytest.fail(w))
    assert [(r.id, r.uri) for r in found] == [("shared", "http://user/index"), ("sys-only", "http://sys/index"),
                                               ("later", "http://later/index")]


def test_a_users_file_hides_the_system_file_of_the_same_name(confdirs):
    # virt-builder (sources.ml, read_sources): a file name read once is not read again from a later directory
    user, system = confdirs
    (user / "libguestfs.conf").write_text("[mine]\nuri=http://mine/index\n")
    (system / "libguestfs.conf").write_text("[libguestfs.org]\nuri=http://upstream/index\n")
    assert [r.id for r in repos.configured(lambda w: pytest.fail(w))] == ["mine"]


def test_a_broken_conf_file_does_not_hide_the_others(confdirs):
    _user, system = confdirs
    (system / "a-broken.conf").write_bytes(b"[x]\nuri=http://x/\xff\n")
    (system / "b-nouri.conf").write_text("[nouri]\nproxy=off\n")
    (system / "c-good.conf").write_text("[good]\nuri=http://good/index\n")
    warnings = []
    assert [r.id for r in repos.configured(warnings.append)] == ["good"]
    assert "a-broken.conf: cannot read it" in warnings[0] and "b-nouri.conf:1: [nouri]: 'uri='" in warnings[1]


def test_select_prefers_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("VIRT_BUILDER_DIRS", str(tmp_path))
    key = tmp_path / "k.asc"
    assert repos.select(["http://h/index.asc"], key, print) == [Repo("http://h/index.asc", "http://h/index.asc", key,
                                                                       origin="--repo")]
    assert repos.select(None, None, print) == []
    with pytest.raises(InputError, match="--repo-key goes with --repo"):
        repos.select(None, key, print)
    with pytest.raises(InputError, match="unsupported URL scheme 'ftp'"):
        repos.select(["ftp://h/index"], None, print)


def test_unsigned_index_of_a_repo_without_key(tmp_path):
    (tmp_path / "index").write_text(INDEX)
    loaded = repos.load(Repo("r", (tmp_path / "index").as_uri()))
    assert not loaded.verified
    assert loaded.index.templates[0].notes == "Line one\n\n- a dash line"


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return make_key(tmp_path_factory.mktemp("key"))


def signed_repo(tmp_path, key, text=INDEX):
    (tmp_path / "index").write_text(text)
    signed = key.clearsign(tmp_path / "index", tmp_path / "index.asc")
    return Repo("r", signed.as_uri(), gpgkey=key.public)


def test_signed_index_is_verified_and_only_its_signed_text_read(tmp_path, key):
    repo = signed_repo(tmp_path, key)
    loaded = repos.load(repo)
    assert loaded.verified
    template = loaded.index.templates[0]
    # The signed text loses trailing blanks and dash-escaping; the notes come through intact.
    assert template.notes == "Line one\n\n- a dash line"
    unverified = repos.load(Repo("r", repo.uri))
    assert not unverified.verified and unverified.index.templates == loaded.index.templates


def test_tampered_index_is_refused(tmp_path, key):
    repo = signed_repo(tmp_path, key)
    path = tmp_path / "index.asc"
    path.write_text(path.read_text().replace("size=2147483648", "size=2147483649"))
    with pytest.raises(SourceError, match="signature of the index of repository r .* is not valid"):
        repos.load(repo)


def test_index_signed_by_another_key_is_refused(tmp_path, key):
    repo = signed_repo(tmp_path, key)
    other = make_key(tmp_path / "other", "other@example.invalid")
    with pytest.raises(SourceError, match="is not valid"):
        repos.load(Repo("r", repo.uri, gpgkey=other.public))


def test_unsigned_index_of_a_repo_with_key_is_refused(tmp_path, key):
    (tmp_path / "index").write_text(INDEX)
    with pytest.raises(SourceError, match="the index is not signed, but the repository has a key"):
        repos.load(Repo("r", (tmp_path / "index").as_uri(), gpgkey=key.public))


@pytest.mark.parametrize("extra", ["before", "after"])
def test_text_outside_the_signed_message_is_refused(tmp_path, key, extra):
    repo = signed_repo(tmp_path, key)
    path = tmp_path / "index.asc"
    injected = "[evil]\narch=x86_64\nfile=evil.img\nsize=1\n"
    text = path.read_text()
    path.write_text(injected + "\n" + text if extra == "before" else text + "\n" + injected)
    with pytest.raises(SourceError, match="not signed|outside its one signed message"):
        repos.load(repo)


def test_errors_in_a_signed_index_name_the_line_of_the_signed_file(tmp_path, key):
    repo = signed_repo(tmp_path, key, INDEX.replace("size=2147483648", "size=2G"))
    loaded = repos.load(repo)
    (skipped,) = loaded.index.skipped
    signed_lines = (tmp_path / "index.asc").read_text().splitlines()
    assert signed_lines[skipped.line - 1] == "size=2G"
    assert loaded.index.warnings[0].startswith(f"{repo.uri}:{skipped.line}: [debian-12] field 'size'")


def test_blanks_at_line_ends_of_signed_notes_survive(tmp_path, key):
    # virt-builder parses the signed file itself, so notes keep their trailing blanks, signed or not;
    # gpg's output of the verified text drops them
    text = INDEX.replace("notes=Line one\n", "notes=Line one  \n").replace("- a dash line\n", "- a dash line\t\n")
    signed = repos.load(signed_repo(tmp_path, key, text)).index.templates[0]
    (tmp_path / "plain").write_text(text)
    plain = repos.load(Repo("p", (tmp_path / "plain").as_uri())).index.templates[0]
    assert signed.notes == plain.notes == "Line one  \n\n- a dash line\t"


def test_signed_text_that_differs_from_the_files_copy_is_refused(tmp_path, key, monkeypatch):
    # the file's copy is read only when it differs from what gpg verified by blanks at line ends alone
    repo = signed_repo(tmp_path, key)
    verified = repos.gpg.verify_clearsigned
    monkeypatch.setattr(repos.gpg, "verify_clearsigned",
                        lambda *a: verified(*a).replace(b"size=2147483648", b"size=1"))
    with pytest.raises(SourceError, match="the signed text of the index differs from the file's copy of it"):
        repos.load(repo)


def test_missing_index_file(tmp_path):
    with pytest.raises(SourceError, match="cannot read the index"):
        repos.load(Repo("r", (tmp_path / "nothing").as_uri()))


def test_search_records_unreadable_repositories(tmp_path):
    (tmp_path / "index").write_text(INDEX)
    good, bad = Repo("good", (tmp_path / "index").as_uri()), Repo("bad", (tmp_path / "nothing").as_uri())
    result = repos.search([bad, good])
    assert [f.repo.id for f in result.found] == ["good"]
    assert result.failed[0][0] == bad
    assert "good (" in result.describe() and "1 templates" in result.describe() and "cannot read" in result.describe()


def test_index_over_http_with_short_errors(tmp_path):
    import functools
    import http.server
    import threading

    (tmp_path / "index").write_text(INDEX)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        loaded = repos.load(Repo("r", f"{base}/index", proxy="off"))
        assert loaded.index.templates[0].name == "debian-12"
        with pytest.raises(SourceError) as info:
            repos.load(Repo("r", f"{base}/missing"))
        assert str(info.value) == f"repository r ({base}/missing): cannot download the index: HTTP 404 File not found"
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(SourceError, match=r"cannot download the index: cannot connect \(Connection refused\)"):
        repos.load(Repo("r", f"{base}/index", proxy="off"))
