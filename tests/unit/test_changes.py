"""What changed between two package lists, file listings and version records."""

from __future__ import annotations

from imagebuilder.attest import changes
from imagebuilder.sbom.model import Package


def pkg(name: str, version: str, arch: str = "amd64") -> Package:
    return Package(name, version, arch)


def test_packages_added_removed_upgraded_downgraded_in_dpkg_order():
    before = [pkg("openssl", "3.0.15-1~deb12u1"), pkg("curl", "7.88.1-10"), pkg("vim", "2:9.0.1378-2"),
              pkg("gone", "1.0"), pkg("libc6", "2.36-9", "i386")]
    after = [pkg("openssl", "3.0.16-1~deb12u1"), pkg("curl", "7.88.1-10"), pkg("vim", "2:9.0.1000-1"),
             pkg("tree", "2.1.0-1"), pkg("libc6", "2.36-9", "amd64")]
    result = changes.packages(before, after)
    assert [p.key for p in result.added] == ["libc6:amd64", "tree:amd64"]
    assert [p.key for p in result.removed] == ["gone:amd64", "libc6:i386"]
    assert [(a.version, b.version) for a, b in result.upgraded] == [("3.0.15-1~deb12u1", "3.0.16-1~deb12u1")]
    assert [(a.name, b.version) for a, b in result.downgraded] == [("vim", "2:9.0.1000-1")]


def test_tilde_and_epoch_order_like_dpkg():
    result = changes.packages([pkg("a", "1.0~rc1"), pkg("b", "1:1.0")], [pkg("a", "1.0"), pkg("b", "2.0")])
    assert [a.name for a, _ in result.upgraded] == ["a"] and [a.name for a, _ in result.downgraded] == ["b"]


def test_one_line_summary_for_a_scheduled_rebuild_log():
    result = changes.packages([pkg(f"p{i}", "1.0-1") for i in range(7)], [pkg(f"p{i}", "1.0-2") for i in range(7)]
                              + [pkg("tree", "2.1.0-1")])
    line = changes.one_line(result, limit=3)
    assert line == ("7 packages upgraded: p0 1.0-1 → 1.0-2, p1 1.0-1 → 1.0-2, p2 1.0-1 → 1.0-2, … (4 more); "
                    "1 package added: tree 2.1.0-1")
    assert changes.one_line(changes.packages([pkg("a", "1")], [pkg("a", "1")])) == "no package changed"


def test_table_and_files_and_build_notes():
    result = changes.packages([pkg("curl", "1")], [pkg("curl", "2"), pkg("tree", "3")])
    assert changes.table(result) == [["CHANGE", "PACKAGE", "BEFORE", "AFTER"], ["added", "tree:amd64", "-", "3"],
                                     ["upgraded", "curl:amd64", "1", "2"]]
    assert changes.files({"/etc/a": "1", "/etc/b": "2"}, {"/etc/b": "3", "/etc/c": "4"}) == \
        {"added": ["/etc/c"], "removed": ["/etc/a"], "changed": ["/etc/b"]}
    notes = changes.builds({"recipe": "sha256:" + "1" * 64, "base": "sha256:aa", "steps": ["write: /etc/motd"]},
                           {"recipe": "sha256:" + "2" * 64, "base": "sha256:aa",
                            "steps": ["write: /etc/motd", "install: tree"]})
    assert notes == ["recipe: 111111111111 → 222222222222", "step added: install: tree"]
