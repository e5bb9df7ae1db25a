"""DSSE envelopes signed and checked with securesystemslib: a PEM private key (ed25519, ECDSA or RSA,
PKCS#8, optionally encrypted) or an exported OpenPGP secret key, used in a throwaway GnuPG home.

Secrets stay in this process: a PEM key is decrypted in memory; an OpenPGP key's passphrase goes to
the throwaway gpg-agent over a pipe (never an argument), and the agent ends with the signing.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import CryptoSigner, GPGSigner, Key, Signer, SSlibKey

from imagebuilder.errors import BuildError, InputError
from imagebuilder.run import require, run

PAYLOAD_TYPE = "application/vnd.in-toto+json"
_PGP_SECRET = b"-----BEGIN PGP PRIVATE KEY BLOCK-----"
_PGP_PUBLIC = b"-----BEGIN PGP PUBLIC KEY BLOCK-----"


class SignatureError(BuildError):
    """A signature, a key or an envelope does not check out."""


def is_openpgp(path: Path) -> bool:
    """Whether a key file is an ASCII-armoured OpenPGP key (else: PEM)."""
    head = path.read_bytes()[:64]
    return head.startswith((_PGP_SECRET, _PGP_PUBLIC))


def sign(payload: bytes, key: Path, passphrase: bytes | None = None) -> dict[str, Any]:
    """A DSSE envelope (as JSON-ready dict) of payload, signed with the private key in the file key."""
    envelope = Envelope(payload, PAYLOAD_TYPE, {})
    try:
        data = key.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the signing key {key}: {exc.strerror}") from None
    if data.startswith(_PGP_SECRET):
        with _gpg_home() as home:
            try:
                envelope.sign(_gpg_signer(home, key, passphrase))
            except (OSError, ValueError):
                raise InputError(f"gpg could not sign with {key}: " + (
                    "the passphrase is wrong" if passphrase else "the key needs its passphrase ([sign] passphrase)")) \
                    from None
    else:
        envelope.sign(CryptoSigner(_pem_private(data, key, passphrase)))
    return envelope.to_dict()


def _pem_private(data: bytes, key: Path, passphrase: bytes | None) -> Any:
    try:
        return load_pem_private_key(data, password=passphrase)
    except TypeError:
        raise InputError(f"the signing key {key} is encrypted: give its passphrase ([sign] passphrase)"
                         if passphrase is None else f"the signing key {key} is not encrypted: drop the passphrase") \
            from None
    except ValueError as exc:
        raise InputError(f"the signing key {key} is not a PEM private key or the passphrase is wrong ({exc})") from None


def public_keys(path: Path) -> list[Key]:
    """The public keys in a file: a PEM public key, or an OpenPGP public key (each of its subkeys)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the key {path}: {exc.strerror}") from None
    if data.startswith(_PGP_PUBLIC):
        with _gpg_home() as home:
            _gpg(home, ["--import", str(path)])
            return [GPGSigner.import_(fpr, home)[1] for fpr in _fingerprints(home, secret=False)]
    try:
        return [SSlibKey.from_crypto(load_pem_public_key(data))]
    except ValueError:
        raise InputError(f"{path} is not a PEM public key nor an ASCII-armoured OpenPGP public key") from None


def open_envelope(data: dict[str, Any], keys: list[Key]) -> bytes:
    """The payload of a DSSE envelope, once one of keys verified its signature; SignatureError otherwise."""
    try:
        envelope = Envelope.from_dict(copy.deepcopy(data))  # from_dict changes what it reads
    except (KeyError, TypeError, ValueError) as exc:
        raise SignatureError(f"the provenance is not a DSSE envelope ({exc})") from None
    if envelope.payload_type != PAYLOAD_TYPE:
        raise SignatureError(f"the envelope holds '{envelope.payload_type}', not an in-toto statement")
    signers = ", ".join(sorted(envelope.signatures)) or "nobody"
    try:
        envelope.verify(keys, 1)
    except VerificationError:
        known = ", ".join(key.keyid for key in keys)
        raise SignatureError(f"the signature does not verify with the given key (signed by {signers}; "
                             f"the key is {known}): the envelope was altered or signed with another key") from None
    return envelope.payload


def keyid(path: Path, passphrase: bytes | None = None) -> str:
    """The key id a signature by the private key in path carries (what verify reports)."""
    data = path.read_bytes()
    if data.startswith(_PGP_SECRET):
        with _gpg_home() as home:
            _gpg(home, ["--import", str(path)])
            return _fingerprints(home, secret=True)[0]
    return CryptoSigner(_pem_private(data, path, passphrase)).public_key.keyid


@contextmanager
def _gpg_home() -> Iterator[str]:
    """A throwaway GnuPG home whose agent accepts preset passphrases; the agent is ended afterwards."""
    require("gpg")
    with tempfile.TemporaryDirectory(prefix="imagebuilder-gpg-") as home:
        Path(home, "gpg-agent.conf").write_text("allow-preset-passphrase\n")
        try:
            yield home
        finally:
            run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False)


def _gpg_signer(home: str, key: Path, passphrase: bytes | None) -> Signer:
    """A securesystemslib GPGSigner for the secret key file key, imported into home; the passphrase,
    if any, is preset in home's agent through its stdin."""
    _gpg(home, ["--import", str(key)])
    fingerprints = _fingerprints(home, secret=True)
    if not fingerprints:
        raise InputError(f"{key} holds no OpenPGP secret key")
    if passphrase is not None:
        commands = "".join(f"PRESET_PASSPHRASE {grip} -1 {passphrase.hex().upper()}\n" for grip in _keygrips(home))
        proc = run(["gpg-connect-agent", "--homedir", home], input=commands + "/bye\n", check=False)
        if proc.returncode != 0 or "ERR" in proc.stdout:
            raise BuildError("the throwaway gpg-agent refused the passphrase")
    public = GPGSigner.import_(_signing_fingerprint(home), home)[1]
    return GPGSigner(public, homedir=home)


def _gpg(home: str, args: list[str]) -> str:
    proc = run(["gpg", "--homedir", home, "--batch", "--quiet", *args], check=False)
    if proc.returncode != 0:
        raise InputError(f"gpg {args[0]} failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    return proc.stdout


def _colons(home: str, secret: bool) -> list[list[str]]:
    listing = _gpg(home, ["--with-colons", "--with-keygrip", "--list-secret-keys" if secret else "--list-keys"])
    return [line.split(":") for line in listing.splitlines()]


def _fingerprints(home: str, secret: bool) -> list[str]:
    """Every fingerprint (primary key and subkeys), lower case as securesystemslib names GPG keys."""
    return [fields[9].lower() for fields in _colons(home, secret) if fields[0] == "fpr"]


def _keygrips(home: str) -> list[str]:
    return [fields[9] for fields in _colons(home, True) if fields[0] == "grp"]


def _signing_fingerprint(home: str) -> str:
    """The key gpg signs with by default: the newest signing-capable subkey, else the primary key."""
    rows = _colons(home, True)
    chosen = None
    for index, fields in enumerate(rows):
        if fields[0] in ("sec", "ssb") and "s" in fields[11] and index + 1 < len(rows) and rows[index + 1][0] == "fpr":
            chosen = rows[index + 1][9].lower()
    if chosen is None:
        raise InputError("the OpenPGP key has no key that can sign")
    return chosen


def dumps(envelope: dict[str, Any]) -> str:
    """The envelope as one line of JSON (the .intoto.jsonl convention: one envelope a line)."""
    return json.dumps(envelope, sort_keys=True)
