"""Trust: nothing from the network is used unverified unless the recipe says so, signature failures
are fatal, the appliance network is off unless a step needs it, and secrets stay secret (env:VAR
passwords, --no-inline-secrets, --strict-paths, errors and descriptions that never echo a password)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imagebuilder import recipe, stages
from imagebuilder.cache import Cache
from imagebuilder.cli import app
from imagebuilder.errors import RecipeError, SourceError
from imagebuilder.guest import passwords
from imagebuilder.progress import Reporter
from imagebuilder.sources import index, repos, template, url
from imagebuilder.sources.base import BaseImage
from imagebuilder.values import ArgContext
from tests.signing import make_key

HEAD = '[image]\nname = "web"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


# --- unverified downloads ------------------------------------------------------------------------

def test_a_url_base_needs_a_checksum_or_an_explicit_none(tmp_path):
    with pytest.raises(RecipeError) as info:
        recipe.load(write(tmp_path, HEAD + '[base]\nurl = "http://127.0.0.1/x.img"\n'))
    assert (info.value.line, info.value.key) == (3, "base.checksum")
    explicit = recipe.load(write(tmp_path, HEAD + '[base]\nurl = "http://127.0.0.1/x.img"\nchecksum = "none"\n'))
    assert explicit.base.checksum is None and explicit.base.checksum_url is None


INDEX = "[bare]\nname=No checksum\narch=x86_64\nfile=bare.qcow2\nformat=qcow2\nsize=1048576\n"


class RecordingFetch:
    def __init__(self):
        self.calls = []

    def __call__(self, file_url, checksum, cache, reporter):
        self.calls.append((file_url, checksum))
        return BaseImage(path=Path("/x"), kind="disk", digest="sha256:00", source=file_url, format="qcow2",
                         virtual_size=1048576)


@pytest.mark.parametrize("repo_uri, refused", [("http://127.0.0.1:1/builder/index", True),
                                               ("file:///srv/builder/index", False)])
def test_a_template_without_checksum_from_an_unsigned_http_index_is_refused(monkeypatch, tmp_path, repo_uri,
                                                                           refused):
    found = repos.RepoIndex(repos.Repo("r", repo_uri), index.parse(INDEX, repo_uri), verified=False)
    monkeypatch.setattr(template, "_search", lambda _repos: repos.Search(found=[found]))
    fake = RecordingFetch()
    monkeypatch.setattr(template.url, "fetch", fake)
    loaded = recipe.load(write(tmp_path, HEAD + f'[base]\ntemplate = "bare"\nrepo = "{repo_uri}"\n'))
    reporter = Reporter("plain")
    if refused:
        with pytest.raises(SourceError, match="has no checksum.* cannot be verified; refusing it") as info:
            template.fetch(template.identify(loaded, reporter), Cache(tmp_path / "cache"), reporter)
        assert info.value.exit_code == 1 and fake.calls == []
    else:
        template.fetch(template.identify(loaded, reporter), Cache(tmp_path / "cache"), reporter)
        assert fake.calls == [("file:///srv/builder/bare.qcow2", None)]


# --- signatures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """An image and its SHA256SUMS signed by a key; a second key that signed nothing of it."""
    root = tmp_path_factory.mktemp("signed")
    (root / "disk.img").write_bytes(os.urandom(4096))
    import hashlib
    (root / "SHA256SUMS").write_text(f"{hashlib.sha256((root / 'disk.img').read_bytes()).hexdigest()}  disk.img\n")
    good = make_key(root / "good")
    other = make_key(root / "other", "other@example.invalid")
    good.detach_sign(root / "SHA256SUMS", root / "SHA256SUMS.sig")
    other.detach_sign(root / "SHA256SUMS", root / "SHA256SUMS.other.sig")
    (root / "TAMPERED").write_text((root / "SHA256SUMS").read_text().replace("disk.img", "disk.img "))
    return root, good.public, other.public


@pytest.mark.parametrize("sums, sig, which", [
    ("SHA256SUMS", "SHA256SUMS.sig", "good"),            # the control: accepted
    ("TAMPERED", "SHA256SUMS.sig", "good"),              # changed after signing
    ("SHA256SUMS", "SHA256SUMS.other.sig", "good"),      # a good signature by a key we do not trust
    ("SHA256SUMS", "SHA256SUMS.sig", "other"),           # signed, but not by the key the recipe names
    ("SHA256SUMS", "disk.img", "good"),                  # not a signature at all
])
def test_signature_failures_are_fatal_and_cache_nothing(tmp_path, signed, sums, sig, which):
    root, good, other = signed
    check = url.Verification(checksum_url=sums, signature_url=sig, keyring=good if which == "good" else other)
    cache = Cache(tmp_path / "cache")
    accepted = (sums, sig, which) == ("SHA256SUMS", "SHA256SUMS.sig", "good")
    if accepted:
        assert url.fetch((root / "disk.img").as_uri(), check, cache, Reporter("plain")).digest.startswith("sha256:")
        return
    with pytest.raises(SourceError, match="signature of .* is not valid") as info:
        url.fetch((root / "disk.img").as_uri(), check, cache, Reporter("plain"))
    assert info.value.exit_code == 1
    assert not (tmp_path / "cache" / "images").exists() or list((tmp_path / "cache" / "images").iterdir()) == []


# --- the appliance network -----------------------------------------------------------------------

@pytest.mark.parametrize("steps, customize, network", [
    ('[[steps]]\nhostname = "a"\n[[steps]]\nrun_command = "true"\n', "", False),
    ('[[steps]]\ninstall = ["nginx"]\n', "", True),
    ('[[steps]]\nupdate = true\n', "", True),
    ('[[steps]]\nhostname = "a"\n', "[customize]\nnetwork = true\n", True),
    ('[[steps]]\nfirstboot_install = ["nginx"]\n', "", False),   # installs at first boot, with the guest's network
])
def test_the_appliance_network_is_off_unless_a_step_needs_it(tmp_path, steps, customize, network):
    loaded = recipe.load(write(tmp_path, HEAD + "[base.bootstrap]\n" + customize + steps))
    assert loaded.network is network


# --- secrets -------------------------------------------------------------------------------------

def test_env_password_is_read_when_the_step_runs_and_described_without_its_value(monkeypatch, tmp_path):
    monkeypatch.setenv("IBTEST_PW", "s3cret-from-env")
    spec = passwords.parse("env:IBTEST_PW", ArgContext(tmp_path))
    assert spec.describe() == "from environment variable IBTEST_PW"
    table = passwords.parse({"env": "IBTEST_PW", "locked": True}, ArgContext(tmp_path))
    assert (table.kind, table.source, table.locked) == ("env", "IBTEST_PW", True)
    monkeypatch.setenv("IBTEST_PW", "changed later")
    field = passwords.shadow_field(spec)
    import crypt
    assert crypt.crypt("changed later", field) == field


def test_env_password_changes_the_stage_key_without_showing_in_it(monkeypatch, tmp_path):
    path = write(tmp_path, HEAD + '[base.bootstrap]\n[[steps]]\nroot_password = "env:IBTEST_PW"\n')
    monkeypatch.setenv("IBTEST_PW", "first-value")
    first = stages.plan(recipe.load(path), "sha256:00", b"k" * 32)
    monkeypatch.setenv("IBTEST_PW", "second-value")
    second = stages.plan(recipe.load(path), "sha256:00", b"k" * 32)
    assert first[-2].key != second[-2].key
    assert "first-value" not in repr(first) and "second-value" not in repr(second)


@pytest.mark.parametrize("selector", ["hunter2-typed-alone", "pasword:hunter2-typed-alone",
                                      "file:hunter2-typed-alone", "locked:hunter2-typed-alone"])
def test_a_bad_password_selector_is_not_echoed(tmp_path, selector):
    path = write(tmp_path, HEAD + f'[base.bootstrap]\n[[steps]]\nroot_password = "{selector}"\n')
    with pytest.raises(RecipeError) as info:
        recipe.load(path)
    assert "hunter2-typed-alone" not in str(info.value) or selector.startswith("file:")


def test_inline_passwords_are_refused_only_when_asked(tmp_path):
    path = write(tmp_path, HEAD + '[base.bootstrap]\n[[steps]]\nroot_password = "password:Wr1tten-In"\n')
    assert recipe.load(path).steps[0].describe() == "root_password: inline password"
    result = CliRunner().invoke(app, ["validate", "--no-inline-secrets", str(path)])
    assert result.exit_code == 2 and "Wr1tten-In" not in result.output


def test_strict_paths_accept_what_stays_inside(tmp_path):
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "motd").write_text("hi\n")
    (tmp_path / "files" / "link").symlink_to("motd")  # a symlink that stays inside is fine
    path = write(tmp_path, HEAD + '[base.bootstrap]\n[[steps]]\nupload = "files/link:/etc/motd"\n'
                                  '[[steps]]\nroot_password = { random = "secrets/root.pw" }\n'
                                  '[output]\npath = "out/web.qcow2"\n')
    loaded = recipe.load(path, strict_paths=True, inline_secrets=False)
    assert loaded.steps[0].arg[0] == (tmp_path / "files" / "motd").resolve()
    assert loaded.output.path == (tmp_path / "out" / "web.qcow2").resolve()
