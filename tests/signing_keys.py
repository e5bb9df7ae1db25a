"""Signing keys made for tests: an ed25519 PEM pair and an OpenPGP pair (in a throwaway GnuPG home)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import CryptoSigner


def pem_keys(directory: Path, name: str, passphrase: bytes | None = None) -> tuple[Path, Path]:
    """NAME.key (PKCS#8, encrypted with passphrase if given) and NAME.pub in directory."""
    private = CryptoSigner.generate_ed25519()._private_key  # noqa: SLF001 (the library makes it; we write it)
    encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    secret, public = directory / f"{name}.key", directory / f"{name}.pub"
    secret.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    public.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    return secret, public


def openpgp_keys(directory: Path, passphrase: str) -> tuple[Path, Path]:
    """release.asc (an exported secret key protected by passphrase) and release.pub.asc in directory."""
    home = directory / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase-fd", "0"]
    try:
        subprocess.run(gpg + ["--quick-gen-key", "Release <release@example.org>", "ed25519", "sign", "never"],
                       input=passphrase.encode(), check=True, capture_output=True)
        secret = subprocess.run(gpg + ["--armor", "--export-secret-keys"], input=passphrase.encode(), check=True,
                                capture_output=True).stdout
        public = subprocess.run(gpg + ["--armor", "--export"], check=True, capture_output=True).stdout
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False, capture_output=True)
    (directory / "release.asc").write_bytes(secret)
    (directory / "release.pub.asc").write_bytes(public)
    return directory / "release.asc", directory / "release.pub.asc"
