"""A virt-builder repository as an output: a directory (served by any web server, or read as a path)
that gets the image compressed with xz and an entry in its native-format `index`, clearsigned as
`index.asc` with the user's GPG key, so that others run plain `virt-builder NAME` against it.

Each build is a new revision of the entry (revision= one more than the index had), in a file of its
own (NAME-REVISION.FORMAT.xz): the file is complete before the index names it, the index is replaced
atomically, and only then is the previous revision's file deleted. Other entries are left as they are.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imagebuilder import disk
from imagebuilder.errors import BuildError
from imagebuilder.files import file_digest
from imagebuilder.progress import Reporter
from imagebuilder.recipe.model import RepoOutput
from imagebuilder.run import run
from imagebuilder.sources import index as index_format

_HEADER = re.compile(r"^\[([^\]]+)\]\s*$")
_DEVICE = re.compile(r"^/dev/[sv]d[a-z]+\d+$")


def entry_text(repo: RepoOutput, fields: dict[str, Any]) -> str:
    """The index section of the template: virt-builder's fields, notes continued on indented lines."""
    lines = [f"[{repo.name}]"]
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value).rstrip("\n")
        lines.append(f"{key}=" + "\n".join(line if n == 0 else f" {line}" for n, line in enumerate(text.split("\n"))))
    return "\n".join(lines) + "\n"


def replace_entry(text: str, name: str, entry: str) -> str:
    """The index text with the section `name` replaced by entry (or entry appended); the rest as it was."""
    lines = text.splitlines(keepends=True)
    start = next((n for n, line in enumerate(lines) if (m := _HEADER.match(line)) and m[1] == name), None)
    if start is None:
        return text + ("" if not text or text.endswith("\n\n") else "\n" if text.endswith("\n") else "\n\n") + entry
    end = next((n for n in range(start + 1, len(lines)) if _HEADER.match(lines[n])), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1  # the blank lines between sections stay
    return "".join(lines[:start]) + entry + "".join(lines[end:])


def previous(text: str, name: str) -> tuple[int, str | None]:
    """The revision and file of the entry `name` in an index's text (0 and None when it has none)."""
    for template in index_format.parse(text, "index").templates:
        if template.name == name:
            revision = template.revision if isinstance(template.revision, int) else 0
            return revision, template.file
    return 0, None


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on the directory itself (no lock file left among what a web server serves)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def publish(repo: RepoOutput, image: Path, fmt: str, facts: dict[str, str], osinfo: str | None,
            created: Callable[[str, Callable[[], object]], None], reporter: Reporter) -> dict[str, Any]:
    """Add image (of fmt) to the repository as the next revision of its entry; returns the manifest record.
    `created(what, undo)` registers what a failure must remove."""
    repo.path.mkdir(parents=True, exist_ok=True)
    with _locked(repo.path):  # two builds of one repository add their entries in turn
        index = repo.path / "index"
        text = index.read_text() if index.exists() else ""
        revision, old_file = previous(text, repo.name)
        revision += 1
        name = f"{repo.name}-{revision}.{fmt}.xz"
        final = repo.path / name
        partial = repo.path / f".{name}.part"
        created(f"repository file {final}", lambda: (partial.unlink(missing_ok=True), final.unlink(missing_ok=True)))
        reporter.info(f"compressing the image for the repository {repo.path} (xz -{repo.xz_level})")
        with open(partial, "wb") as out:
            run(["xz", f"-{repo.xz_level}", "-T0", "-c", str(image)], stdout=out, timeout=7200)
        checksum = file_digest(partial, "sha512").split(":")[1]
        os.replace(partial, final)
        root = facts.get("root", "")
        entry = entry_text(repo, {
            "name": repo.title or facts.get("product_name") or repo.name, "osinfo": repo.osinfo or osinfo,
            "arch": repo.arch, "file": name, "checksum[sha512]": checksum, "format": fmt,
            "size": int(disk.info(image)["virtual-size"]), "compressed_size": final.stat().st_size,
            "expand": root if _DEVICE.match(root) else None, "revision": revision, "notes": repo.notes})
        _write_index(repo, replace_entry(text, repo.name, entry))
        if old_file and old_file != name and re.fullmatch(rf"{re.escape(repo.name)}-\d+\.\w+\.xz", old_file):
            (repo.path / old_file).unlink(missing_ok=True)
    reporter.info(f"virt-builder repository {repo.path}: {repo.name} revision {revision}"
                  + ("" if repo.key else " (index not signed: no key)"))
    return {"type": "file", "path": str(final), "format": f"{fmt}.xz", "digest": f"sha512:{checksum}",
            "repository": str(repo.path), "template": repo.name, "revision": revision}


def _write_index(repo: RepoOutput, text: str) -> None:
    """Write index, and with a key index.asc clearsigned by it, each atomically."""
    plain = repo.path / ".index.part"
    plain.write_text(text)
    if repo.key:
        signed = repo.path / ".index.asc.part"
        env = {**os.environ, **({"GNUPGHOME": str(repo.gnupghome)} if repo.gnupghome else {})}
        try:
            run(["gpg", "--batch", "--yes", "--quiet", "--local-user", repo.key, "--clearsign", "--output",
                 str(signed), str(plain)], env=env, timeout=300)
        except BuildError as exc:
            plain.unlink(missing_ok=True)
            raise BuildError(f"signing the index of {repo.path} with key {repo.key} failed: {exc.message}",
                             hint="is the key in the keyring (GNUPGHOME, or gnupghome in [[output.repo]]) and "
                                  "its passphrase in gpg-agent?") from None
        os.replace(signed, repo.path / "index.asc")
    os.replace(plain, repo.path / "index")
