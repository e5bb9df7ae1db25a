"""Stage keys: stable for the same inputs, changed from the first changed stage on, secret-free."""

from __future__ import annotations

import stat

from imagebuilder import recipe
from imagebuilder.stages import plan, secret_for

BASE = '[image]\nname = "web"\n[base.bootstrap]\n[disk]\nsize = "4G"\n'
STEPS = '[[steps]]\ninstall = ["nginx"]\n[[steps]]\nhostname = "web01"\n[[steps]]\nwrite = "/etc/motd:{motd}"\n'


def stages_for(tmp_path, text, secret=b"k" * 32, base_digest="sha256:abc"):
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return plan(recipe.load(path), base_digest, secret)


def test_same_inputs_same_keys(tmp_path):
    first = stages_for(tmp_path, BASE + STEPS.format(motd="hi"))
    second = stages_for(tmp_path, BASE + STEPS.format(motd="hi"))
    assert [s.key for s in first] == [s.key for s in second]
    assert [s.name for s in first] == ["base", "prepare", "step 1 (install)", "step 2 (hostname)",
                                       "step 3 (write)", "sysprep"]


def test_a_changed_step_changes_it_and_what_follows(tmp_path):
    old = stages_for(tmp_path, BASE + STEPS.format(motd="hi"))
    new = stages_for(tmp_path, BASE + STEPS.format(motd="bye"))
    same = [a.key == b.key for a, b in zip(old, new)]
    assert same == [True, True, True, True, False, False]
    assert [a.own == b.own for a, b in zip(old, new)] == [True, True, True, True, False, True]


def test_base_digest_and_disk_change_everything(tmp_path):
    old = stages_for(tmp_path, BASE + STEPS.format(motd="hi"))
    assert all(a.key != b.key for a, b in zip(old, stages_for(tmp_path, BASE + STEPS.format(motd="hi"),
                                                               base_digest="sha256:def")))
    bigger = stages_for(tmp_path, BASE.replace("4G", "5G") + STEPS.format(motd="hi"))
    assert [a.key == b.key for a, b in zip(old, bigger)] == [True] + [False] * 5


def test_package_installs_checkpoint_by_default(tmp_path):
    stages = stages_for(tmp_path, BASE + STEPS.format(motd="hi"))
    assert [s.checkpoint for s in stages] == [False, False, True, False, False, False]


def test_host_file_content_is_part_of_the_key(tmp_path):
    (tmp_path / "app.conf").write_text("one")
    text = BASE + '[[steps]]\nupload = "app.conf:/etc/app.conf"\n'
    before = stages_for(tmp_path, text)
    (tmp_path / "app.conf").write_text("two")
    after = stages_for(tmp_path, text)
    assert before[2].key != after[2].key


def test_password_file_changes_key_but_key_does_not_reveal_it(tmp_path):
    (tmp_path / "pw").write_text("hunter2")
    text = BASE + '[[steps]]\nroot_password = "file:pw"\n'
    before = stages_for(tmp_path, text)
    (tmp_path / "pw").write_text("hunter3")
    after = stages_for(tmp_path, text)
    assert before[2].key != after[2].key
    other_secret = stages_for(tmp_path, text, secret=b"z" * 32)
    assert other_secret[2].own != after[2].own


def test_random_password_is_never_cached(tmp_path):
    text = BASE + '[[steps]]\nhostname = "a"\n[[steps]]\nroot_password = { random = "pw.txt" }\n'
    first, second = stages_for(tmp_path, text), stages_for(tmp_path, text)
    assert [s.cacheable for s in first] == [True, True, True, False, False]
    assert first[2].key == second[2].key and first[3].key != second[3].key


def test_secret_is_made_once_owner_only(tmp_path):
    secret = secret_for(tmp_path / "cache")
    assert len(secret) == 32 and secret_for(tmp_path / "cache") == secret
    assert stat.S_IMODE((tmp_path / "cache" / "stage-secret").stat().st_mode) == 0o600
