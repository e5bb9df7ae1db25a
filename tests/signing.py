"""A throwaway OpenPGP key for tests that sign things (indexes, checksum files)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SigningKey:
    """A key in its own GNUPGHOME; `public` is its armored public key."""

    home: Path
    public: Path

    def _gpg(self, *args: str) -> None:
        try:
            subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--yes", "--quiet", *args],
                           check=True, capture_output=True, stdin=subprocess.DEVNULL)
        finally:
            _stop_agent(self.home)

    def clearsign(self, source: Path, target: Path) -> Path:
        """Write a clearsigned copy of source to target."""
        self._gpg("--clearsign", "--armor", "--output", str(target), str(source))
        return target

    def detach_sign(self, source: Path, target: Path) -> Path:
        """Write a detached binary signature of source to target."""
        self._gpg("--detach-sign", "--output", str(target), str(source))
        return target


def _stop_agent(home: Path) -> None:
    """gpg starts a gpg-agent daemon per home; a test must not leave one running."""
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True,
                   stdin=subprocess.DEVNULL)


def make_key(directory: Path, email: str = "test@example.invalid") -> SigningKey:
    """A new passphrase-less key (about a second)."""
    home = directory / "gnupg"
    home.mkdir(mode=0o700, parents=True)
    env = {**os.environ, "GNUPGHOME": str(home)}
    try:
        subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", f"imagebuilder test <{email}>",
                        "default", "default", "never"], check=True, capture_output=True, env=env,
                       stdin=subprocess.DEVNULL)
    finally:
        _stop_agent(home)
    public = directory / "key.asc"
    with open(public, "wb") as out:
        subprocess.run(["gpg", "--armor", "--export", email], check=True, stdout=out, env=env,
                       stdin=subprocess.DEVNULL)
    return SigningKey(home, public)
