"""OpenPGP signature checks with gpg, in a throwaway home holding only the keys the user named."""

from __future__ import annotations

import tempfile
from pathlib import Path

from imagebuilder.errors import SourceError
from imagebuilder.run import run


def _import_keys(home: str, keys: list[Path]) -> None:
    for key in keys:
        if not key.is_file():
            raise SourceError(f"signing key {key} does not exist")
        run(["gpg", "--homedir", home, "--batch", "--quiet", "--import", str(key)])


def _require_valid(status: str, what: str) -> None:
    lines = status.splitlines()
    if "[GNUPG:] FAILED" in lines or not any(line.startswith("[GNUPG:] VALIDSIG ") for line in lines):
        bad = [ln.split()[1] for ln in lines if ln.startswith("[GNUPG:] ") and len(ln.split()) > 1]
        raise SourceError(f"the signature of {what} is not valid ({', '.join(bad) or 'no signature'})")


def verify_detached(data: Path, signature: Path, keys: list[Path], what: str) -> None:
    """Raise SourceError unless `signature` is a good signature of `data` by one of `keys`."""
    with tempfile.TemporaryDirectory(prefix="imagebuilder-gpg-") as home:
        _import_keys(home, keys)
        proc = _verify(home, ["--verify", str(signature), str(data)])
        _require_valid(proc, what)


def verify_clearsigned(signed: Path, keys: list[Path], what: str) -> bytes:
    """The content of a clearsigned file, only if its signature by one of `keys` is good."""
    with tempfile.TemporaryDirectory(prefix="imagebuilder-gpg-") as home:
        _import_keys(home, keys)
        output = Path(home) / "content"
        proc = _verify(home, ["--output", str(output), "--decrypt", str(signed)])
        _require_valid(proc, what)
        return output.read_bytes()


def _verify(home: str, args: list[str]) -> str:
    """gpg's status lines; a failed check shows there too, so the exit code is not what decides."""
    proc = run(["gpg", "--homedir", home, "--batch", "--status-fd", "1", "--trust-model", "always", *args],
               check=False)
    return proc.stdout if proc.returncode == 0 else proc.stdout + "\n[GNUPG:] FAILED"
