"""virt-builder repositories: where they are configured, and their indexes, fetched and verified.

Repositories are configured like virt-builder's (virt-builder(1), "SOURCES OF TEMPLATES"): `*.conf`
files in `$XDG_CONFIG_HOME/virt-builder/repos.d` (the user's) and `DIR/virt-builder/repos.d` for each
DIR of `$VIRT_BUILDER_DIRS` (default `/etc`), holding sections such as

    [example]
    uri=https://example.com/builder/index.asc
    gpgkey=file:///etc/virt-builder/repos.d/example.gpg
    format=native
    proxy=system

A recipe's `[base] repo` or the command line's `--repo` name one index instead of the configured ones.

When a repository has a key, its index must be clearsigned by that key: only the text gpg verified is
parsed, and an unsigned or tampered index is refused. Without a key the index is used unverified.
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
from imagebuilder.sources import index

TIMEOUT = (15, 60)
MAX_INDEX_BYTES = 32 << 20
FORMATS = ("native",)
_BEGIN_SIGNED = "-----BEGIN PGP SIGNED MESSAGE-----"
_BEGIN_SIGNATURE = "-----BEGIN PGP SIGNATURE-----"
_SCHEMES = ("http", "https", "file")


class RepoConfigError(InputError):
    """A repos.d file is wrong: `FILE:LINE: problem` (exit code 2)."""

    def __init__(self, origin: str, line: int | None, problem: str):
        self.origin, self.line, self.problem = origin, line, problem
        super().__init__(f"{origin}:{line}: {problem}" if line else f"{origin}: {problem}")


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


def configured(dirs: list[Path] | None = None) -> list[Repo]:
    """Every repository of the `*.conf` files in dirs (default: config_dirs()), in order, ids unique."""
    repos: dict[str, Repo] = {}
    for directory in config_dirs() if dirs is None else dirs:
        for conf in sorted(directory.glob("*.conf")) if directory.is_dir() else []:
            try:
                text = conf.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise RepoConfigError(str(conf), None, f"cannot read it: {exc}") from None
            for repo in parse_conf(text, conf):
                repos.setdefault(repo.id, repo)
    return list(repos.values())


def parse_conf(text: str, conf: Path) -> list[Repo]:
    """The repositories of one repos.d file (same line syntax as an index)."""
    origin = str(conf)
    found: list[Repo] = []
    first: dict[str, int] = {}
    for section in index.sections(text, origin, error=RepoConfigError):
        if section.name in first:
            raise RepoConfigError(origin, section.line, f"repository [{section.name}] is defined twice "
                                  f"(first at line {first[section.name]})")
        first[section.name] = section.line
        values: dict[str, index.Field] = {}
        for item in section.fields:
            if item.label in values:
                raise RepoConfigError(origin, item.line, f"[{section.name}]: '{item.label}' is given twice")
            values[item.label] = item
        uri = values.get("uri")
        if uri is None or not uri.value:
            raise RepoConfigError(origin, uri.line if uri else section.line,
                                  f"[{section.name}]: 'uri=' (the URL of the index) is required")
        _check_url(uri.value, lambda p: RepoConfigError(origin, uri.line, f"[{section.name}]: {p}"))
        key = values.get("gpgkey")
        gpgkey = None
        if key is not None and key.value:
            gpgkey = key_path(key.value, conf.parent,
                              lambda p: RepoConfigError(origin, key.line, f"[{section.name}]: {p}"))
        fmt = values.get("format")
        proxy = values.get("proxy")
        found.append(Repo(id=section.name, uri=uri.value, gpgkey=gpgkey,
                          format=fmt.value if fmt and fmt.value else "native",
                          proxy=proxy.value if proxy and proxy.value else None,
                          origin=f"{origin}:{section.line}"))
    return found


def key_path(value: str, base_dir: Path, error: Callable[[str], Exception]) -> Path:
    """A gpgkey value (a file:// URL or a path, relative to base_dir) as a path."""
    parsed = urlparse(value)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme:
        raise error(f"gpgkey must be a file:// URL or a path, not {value!r}")
    return base_dir / value


def _check_url(url: str, error: Callable[[str], Exception]) -> None:
    scheme = urlparse(url).scheme
    if scheme not in _SCHEMES:
        raise error(f"unsupported URL scheme '{scheme}' in {url!r} (use http, https or file)")


def from_url(url: str, key: Path | None, origin: str) -> Repo:
    """A repository named by its index URL (a recipe's `repo`, the command line's `--repo`)."""
    _check_url(url, lambda p: InputError(f"{origin}: {p}"))
    return Repo(id=url, uri=url, gpgkey=key, origin=origin)


def select(urls: list[str] | None, key: Path | None) -> list[Repo]:
    """The command line's `--repo` URLs (all signed by key, if given), else the configured repositories."""
    if not urls:
        if key is not None:
            raise InputError("--repo-key goes with --repo")
        return configured()
    return [from_url(url, key, "--repo") for url in urls]


def load(repo: Repo) -> RepoIndex:
    """Fetch repo's index, check its signature when the repo has a key, and parse it."""
    if repo.format not in FORMATS:
        raise SourceError(f"repository {repo}: format '{repo.format}' is not supported (only native)")
    data = _read(repo)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"repository {repo}: the index is not UTF-8 text") from None
    signed = text.lstrip().startswith(_BEGIN_SIGNED)
    if repo.gpgkey is not None:
        if not signed:
            raise SourceError(f"repository {repo}: the index is not signed, but the repository has a "
                              f"key ({repo.gpgkey}); refusing an unsigned index")
        _check_one_message(text, repo)
        with tempfile.TemporaryDirectory(prefix="imagebuilder-index-") as tmp:
            signed_file = Path(tmp) / "index.asc"
            signed_file.write_bytes(data)
            content = gpg.verify_clearsigned(signed_file, [repo.gpgkey], f"the index of repository {repo}")
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise SourceError(f"repository {repo}: the signed index is not UTF-8 text") from None
        return RepoIndex(repo, index.parse(text, repo.uri, _cleartext_line(data.decode("utf-8"))), True)
    if signed:
        _check_one_message(text, repo)
        text, first = unwrap_clearsigned(text)
        return RepoIndex(repo, index.parse(text, repo.uri, first), False)
    return RepoIndex(repo, index.parse(text, repo.uri), False)


def search(repos: list[Repo]) -> Search:
    """Load every repository; one that cannot be read is recorded, not fatal."""
    result = Search()
    for repo in repos:
        try:
            result.found.append(load(repo))
        except SourceError as exc:
            result.failed.append((repo, str(exc)))
    return result


def _check_one_message(text: str, repo: Repo) -> None:
    """Refuse text around or between signed messages: only what gpg verified may be read."""
    lines = text.strip().splitlines()
    if sum(line.rstrip() == _BEGIN_SIGNED for line in lines) != 1 or \
            lines[-1].rstrip() != "-----END PGP SIGNATURE-----":
        raise SourceError(f"repository {repo}: the index holds text outside its one signed message; "
                          "refusing it")


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


def _read(repo: Repo) -> bytes:
    """The bytes at repo.uri (http, https or file), at most MAX_INDEX_BYTES."""
    parsed = urlparse(repo.uri)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_INDEX_BYTES + 1)
        except OSError as exc:
            raise SourceError(f"repository {repo}: cannot read the index: {exc.strerror}") from None
    else:
        session = requests.Session()
        proxies = None
        if repo.proxy in ("no", "off"):
            session.trust_env = False
        elif repo.proxy not in (None, "system"):
            proxies = {"http": repo.proxy, "https": repo.proxy}
        try:
            with session.get(repo.uri, timeout=TIMEOUT, proxies=proxies, stream=True) as response:
                response.raise_for_status()
                buffer = bytearray()
                for chunk in response.iter_content(1 << 16):
                    buffer += chunk
                    if len(buffer) > MAX_INDEX_BYTES:
                        break
                data = bytes(buffer)
        except requests.RequestException as exc:
            raise SourceError(f"repository {repo}: cannot download the index: {_why(exc)}") from None
        finally:
            session.close()
    if len(data) > MAX_INDEX_BYTES:
        raise SourceError(f"repository {repo}: the index is larger than {MAX_INDEX_BYTES >> 20} MiB; refusing it")
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

