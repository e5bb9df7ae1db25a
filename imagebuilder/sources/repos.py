"""virt-builder repositories: where they are configured, and their indexes, fetched and verified.

Repositories are configured like virt-builder's (virt-builder(1), "SOURCES OF TEMPLATES"): `*.conf`
files in `$XDG_CONFIG_HOME/virt-builder/repos.d` (the user's) and `DIR/virt-builder/repos.d` for each
DIR of `$VIRT_BUILDER_DIRS` (default `/etc`), holding sections such as

    [example]
    uri=https://example.com/builder/index.asc
    gpgkey=file:///etc/virt-builder/repos.d/example.gpg
    format=native
    proxy=system

As in virt-builder, a file in the user's directory hides the file of the same name in the system
ones, a repository id read first hides the same id read later, and a broken file or section (no
`uri=`, a line that cannot be read, an unknown format) is skipped with a warning while the others
work. A plain path works as a `uri` like a file:// URL. `format=simplestreams` repositories are read
by simplestreams.py. A recipe's `[base] repo` or the command line's `--repo` name one index instead
of the configured ones.

When a repository has a key, its index must be clearsigned by that key: only text gpg verified is
parsed (the file's own copy of it, which also keeps the blanks at line ends that gpg leaves out), and
an unsigned or tampered index is refused. Without a key the index is used unverified.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests

from imagebuilder import gpg
from imagebuilder.errors import InputError, SourceError
from imagebuilder.sources import index, ini

TIMEOUT = (15, 60)
MAX_INDEX_BYTES = 32 << 20
FORMATS = ("native", "simplestreams")
_BEGIN_SIGNED = "-----BEGIN PGP SIGNED MESSAGE-----"
_BEGIN_SIGNATURE = "-----BEGIN PGP SIGNATURE-----"
_SCHEMES = ("http", "https", "file")

Warn = Callable[[str], None]


@dataclass(frozen=True)
class Repo:
    """One repository: its id, the URL of its index, and the key its index must be signed with."""

    id: str
    uri: str
    gpgkey: Path | None = None
    format: str = "native"
    proxy: str | None = None
    origin: str = ""

    def __str__(self) -> str:
        return self.id if self.id == self.uri else f"{self.id} ({self.uri})"


@dataclass(frozen=True)
class RepoIndex:
    """A repository's parsed index; `verified` says whether its signature was checked."""

    repo: Repo
    index: index.Index
    verified: bool


@dataclass
class Search:
    """The indexes of several repositories, in order, with the ones that could not be read."""

    found: list[RepoIndex] = field(default_factory=list)
    failed: list[tuple[Repo, str]] = field(default_factory=list)

    def describe(self) -> str:
        """The repositories searched, for an error message."""
        parts = [f"{r.repo} ({len(r.index.templates)} templates)" for r in self.found]
        parts += [why for _repo, why in self.failed]
        return "; ".join(parts) or "none configured"


def config_dirs() -> list[Path]:
    """The repos.d directories, the user's first: a repository id there hides the same id elsewhere."""
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    dirs = [Path(xdg) / "virt-builder" / "repos.d"]
    system = [d for d in os.environ.get("VIRT_BUILDER_DIRS", "").split(":") if d] or ["/etc"]
    dirs += [Path(d) / "virt-builder" / "repos.d" for d in system]
    return dirs


def configured(warn: Warn, dirs: list[Path] | None = None) -> list[Repo]:
    """Every repository of the `*.conf` files in dirs (default: config_dirs()), in order, ids unique;
    what cannot be used is skipped with a warning."""
    repos: dict[str, Repo] = {}
    seen_files: set[str] = set()
    for directory in config_dirs() if dirs is None else dirs:
        for conf in sorted(directory.glob("*.conf")) if directory.is_dir() else []:
            if conf.name in seen_files:
                continue  # virt-builder: the user's libguestfs.conf replaces the system's
            try:
                text = conf.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                warn(f"{conf}: cannot read it ({exc}); skipped")
                continue
            seen_files.add(conf.name)
            for repo in parse_conf(text, conf, warn):
                repos.setdefault(repo.id, repo)
    return list(repos.values())


def parse_conf(text: str, conf: Path, warn: Warn) -> list[Repo]:
    """The repositories of one repos.d file (same line syntax as an index); a section that cannot be
    used is skipped with a warning naming the file and line."""
    parsed = ini.read(text)
    for problem in parsed.problems:
        warn(f"{conf}:{problem.line}: {problem.text}; the line is ignored")
    found: list[Repo] = []
    first: dict[str, int] = {}
    for section in parsed.sections:
        try:
            if section.name in first:
                raise ini.Unusable(section.line, f"repository [{section.name}] is defined twice (first at line "
                                          f"{first[section.name]})")
            found.append(_repo(section, conf))
            first[section.name] = section.line
        except ini.Unusable as skip:
            warn(f"{conf}:{skip.line}: {skip.problem}; this repository is skipped")
    return found


def _repo(section: ini.Section, conf: Path) -> Repo:
    """One repos.d section as a Repo; ini.Unusable if it cannot be used."""
    if section.problems:
        raise ini.Unusable(section.problems[0].line, section.problems[0].text)
    name = section.name
    values: dict[str, ini.Field] = {}
    for item in section.fields:
        if item.label in values:
            raise ini.Unusable(item.line, f"[{name}]: '{item.label}' is given twice")
        values[item.label] = item

    def value(key: str) -> str | None:
        item = values.get(key)
        return item.value.strip() or None if item else None

    def skip(key: str, problem: str) -> ini.Unusable:
        return ini.Unusable(values[key].line if key in values else section.line, f"[{name}]: {problem}")

    uri = value("uri")
    if uri is None:
        raise skip("uri", "'uri=' (the URL of the index) is required")
    url = source_url(uri, lambda p: skip("uri", p))
    fmt = value("format") or "native"
    if fmt not in FORMATS:
        raise skip("format", f"unknown format '{fmt}' (virt-builder reads native and simplestreams)")
    key = value("gpgkey")
    gpgkey = key_path(key, conf.parent, lambda p: skip("gpgkey", p)) if key else None
    return Repo(id=name, uri=url, gpgkey=gpgkey, format=fmt, proxy=value("proxy"), origin=f"{conf}:{section.line}")


def key_path(value: str, base_dir: Path, error: Callable[[str], Exception]) -> Path:
    """A gpgkey value (a file:// URL or a path, relative to base_dir) as a path."""
    parsed = urlparse(value)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme:
        raise error(f"gpgkey must be a file:// URL or a path, not {value!r}")
    return base_dir / value


def source_url(uri: str, error: Callable[[str], Exception]) -> str:
    """A repository's URL: http, https or file; a plain path (as libguestfs reads one) as a file:// URL."""
    if "://" not in uri:
        return Path(uri).absolute().as_uri()
    scheme = urlparse(uri).scheme
    if scheme not in _SCHEMES:
        raise error(f"unsupported URL scheme '{scheme}' in {uri!r} (use http, https or file)")
    return uri


def from_url(url: str, key: Path | None, origin: str, fmt: str = "native") -> Repo:
    """A repository named by its index URL (a recipe's `repo`, the command line's `--repo`)."""
    url = source_url(url, lambda p: InputError(f"{origin}: {p}"))
    return Repo(id=url, uri=url, gpgkey=key, format=fmt, origin=origin)


def select(urls: list[str] | None, key: Path | None, warn: Warn) -> list[Repo]:
    """The command line's `--repo` URLs (all signed by key, if given), else the configured repositories."""
    if not urls:
        if key is not None:
            raise InputError("--repo-key goes with --repo")
        return configured(warn)
    return [from_url(url, key, "--repo") for url in urls]


def load(repo: Repo) -> RepoIndex:
    """Fetch repo's index, check its signature when the repo has a key, and parse it."""
    if repo.format == "simplestreams":
        from imagebuilder.sources import simplestreams
        return simplestreams.load(repo)
    text, first, verified = read_text(repo, repo.uri, "the index")
    return RepoIndex(repo, index.parse(text, repo.uri, first), verified)


def read_text(repo: Repo, url: str, what: str) -> tuple[str, int, bool]:
    """The text at url, checked against repo's key: (text, the file's line it starts on, verified).

    With a key, the file must be one message clearsigned by it. The text read is the file's own copy
    of the signed text, once it is known to differ from what gpg verified only by blanks at line ends
    (which signatures do not cover and gpg leaves out)."""
    data = _read(repo, url, what)
    text = _utf8(data, repo, what)
    signed = text.lstrip().startswith(_BEGIN_SIGNED)
    if repo.gpgkey is None:
        if not signed:
            return text, 1, False
        _check_one_message(text, repo, what)
        return *unwrap_clearsigned(text), False
    if not signed:
        raise SourceError(f"repository {repo}: {what} is not signed, but the repository has a "
                          f"key ({repo.gpgkey}); refusing an unsigned index")
    _check_one_message(text, repo, what)
    with tempfile.TemporaryDirectory(prefix="imagebuilder-index-") as tmp:
        signed_file = Path(tmp) / "index.asc"
        signed_file.write_bytes(data)
        content = gpg.verify_clearsigned(signed_file, [repo.gpgkey], f"{what} of repository {repo}")
    cleartext, first = unwrap_clearsigned(text)
    if _lines(_utf8(content, repo, what)) != _lines(cleartext):
        raise SourceError(f"repository {repo}: the signed text of {what} differs from the file's copy of it; "
                          "refusing it")
    return cleartext, first, True


def _lines(text: str) -> list[str]:
    """text's lines without the blanks at their ends, which a clearsignature does not cover."""
    return [line.rstrip(" \t\r") for line in text.rstrip("\n").split("\n")]


def _utf8(data: bytes, repo: Repo, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"repository {repo}: {what} is not UTF-8 text") from None


def search(repos: list[Repo]) -> Search:
    """Load every repository; one that cannot be read is recorded, not fatal."""
    result = Search()
    for repo in repos:
        try:
            result.found.append(load(repo))
        except SourceError as exc:
            result.failed.append((repo, str(exc)))
    return result


def _check_one_message(text: str, repo: Repo, what: str) -> None:
    """Refuse text around or between signed messages: only what gpg verified may be read."""
    lines = text.strip().splitlines()
    if sum(line.rstrip() == _BEGIN_SIGNED for line in lines) != 1 or \
            lines[-1].rstrip() != "-----END PGP SIGNATURE-----":
        raise SourceError(f"repository {repo}: {what} holds text outside its one signed message; refusing it")


def _cleartext_line(text: str) -> int:
    """The line number, in the signed file, where the signed text starts (after the armor headers)."""
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if line.rstrip() == _BEGIN_SIGNED)
    for number in range(start + 1, len(lines)):
        if not lines[number].strip():
            return number + 2
    return len(lines) + 1


def unwrap_clearsigned(text: str) -> tuple[str, int]:
    """The signed text of a clearsigned message, unverified (dash-escaping undone), and its first line."""
    first = _cleartext_line(text)
    lines = text.split("\n")[first - 1:]
    body: list[str] = []
    for line in lines:
        if line.rstrip() == _BEGIN_SIGNATURE:
            break
        body.append(line[2:] if line.startswith("- ") else line)
    return "\n".join(body) + "\n", first


def _read(repo: Repo, url: str, what: str) -> bytes:
    """The bytes at url (http, https or file), fetched as repo says (proxy), at most MAX_INDEX_BYTES."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_INDEX_BYTES + 1)
        except OSError as exc:
            raise SourceError(f"repository {repo}: cannot read {what}: {exc.strerror}") from None
    else:
        session = requests.Session()
        proxies = None
        if repo.proxy in ("no", "off"):
            session.trust_env = False
        elif repo.proxy not in (None, "system"):
            proxies = {"http": repo.proxy, "https": repo.proxy}
        try:
            with session.get(url, timeout=TIMEOUT, proxies=proxies, stream=True) as response:
                response.raise_for_status()
                buffer = bytearray()
                for chunk in response.iter_content(1 << 16):
                    buffer += chunk
                    if len(buffer) > MAX_INDEX_BYTES:
                        break
                data = bytes(buffer)
        except requests.RequestException as exc:
            raise SourceError(f"repository {repo}: cannot download {what}: {_why(exc)}") from None
        finally:
            session.close()
    if len(data) > MAX_INDEX_BYTES:
        raise SourceError(f"repository {repo}: {what} is larger than {MAX_INDEX_BYTES >> 20} MiB; refusing it")
    return data


_CONNECT_REASON = re.compile(r"Failed to resolve '[^']*'|Connection refused|No route to host|Network is unreachable"
                             r"|Name or service not known|certificate verify failed")


def _why(exc: requests.RequestException) -> str:
    """A short reason for a failed request (requests' own messages run to several lines)."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    if isinstance(exc, requests.Timeout):
        return "the server did not answer in time"
    match = _CONNECT_REASON.search(str(exc))
    if isinstance(exc, requests.ConnectionError):
        return f"cannot connect ({match.group(0)})" if match else "cannot connect"
    return str(exc)

