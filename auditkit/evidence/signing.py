"""Keys of the audit trail: one canonical encoding, and separate functions that sign and that verify it.

Two kinds of key protect a trail line, both over the same bytes (:func:`signed_bytes`):

- an **HMAC-SHA256** with a shared secret (``AUDITKIT_TRAIL_KEY``): whoever can check a line can also
  write one, so it proves that a key holder wrote the trail, not which one;
- an **Ed25519 signature** (``AUDITKIT_TRAIL_SIGNING_KEY`` names the operator's private key, a PEM
  file): an auditor given only the public key checks every signed line and can forge none. This is the
  split of Sigstore and Certificate Transparency: a verifier needs only public material.

Signing (:func:`hmac_tag`, :func:`sign`) and verifying (:func:`hmac_matches`, :func:`signature_matches`)
never share more than :func:`signed_bytes`, so a verifier cannot drift from what the writer signed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditkit.errors import InputError

if TYPE_CHECKING:  # cryptography is imported only where a key is used: verify stays fast without one
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

TRAIL_KEY_ENV = "AUDITKIT_TRAIL_KEY"
SIGNING_KEY_ENV = "AUDITKIT_TRAIL_SIGNING_KEY"
PASSPHRASE_ENV = "AUDITKIT_TRAIL_SIGNING_PASSPHRASE"

#: Prefixed to every v2 line before it is MACed or signed, so a signature over a trail line can never
#: be replayed as a signature over anything else.
_DOMAIN = b"auditkit-trail-line-v2\n"


def canonical_json(value: Any) -> str:
    """The one serialisation hashed everywhere: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def signed_bytes(body: dict[str, Any], *, version: int) -> bytes:
    """What an HMAC or signature covers: the canonical line without its ``hmac`` and ``sig`` fields.

    Version 1 lines (before issue 11) MACed the bare canonical JSON; version 2 adds a domain prefix.
    """
    bare = {k: v for k, v in body.items() if k not in ("hmac", "sig")}
    text = canonical_json(bare).encode("utf-8")
    return text if version == 1 else _DOMAIN + text


def hmac_tag(key: bytes, data: bytes) -> str:
    """HMAC-SHA256 of ``data`` under ``key``, hex."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def hmac_matches(key: bytes, data: bytes, tag: object) -> bool:
    """Whether ``tag`` is the HMAC of ``data`` under ``key`` (constant-time)."""
    return isinstance(tag, str) and hmac.compare_digest(tag, hmac_tag(key, data))


def sign(private_key: Ed25519PrivateKey, data: bytes) -> str:
    """The Ed25519 signature of ``data``, hex (128 digits)."""
    return private_key.sign(data).hex()


def signature_matches(public_hex: str, data: bytes, signature: object) -> bool:
    """Whether ``signature`` (hex) is a valid Ed25519 signature of ``data`` by ``public_hex``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not isinstance(signature, str):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(bytes.fromhex(signature), data)
    except (ValueError, InvalidSignature):
        return False
    return True


def public_hex(private_key: Ed25519PrivateKey) -> str:
    """The raw 32-byte public key of ``private_key``, hex: what a trail records and an auditor holds."""
    from cryptography.hazmat.primitives import serialization

    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def fingerprint(public: str) -> str:
    """A short name for a public key: the first 16 hex digits of the SHA-256 of its raw bytes."""
    return hashlib.sha256(bytes.fromhex(public)).hexdigest()[:16]


def is_public_hex(value: object) -> bool:
    """Whether ``value`` looks like a raw Ed25519 public key in hex."""
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def hmac_key_from_env() -> bytes | None:
    """The HMAC key from ``AUDITKIT_TRAIL_KEY`` (UTF-8), or None when unset or empty."""
    value = os.environ.get(TRAIL_KEY_ENV, "")
    return value.encode("utf-8") if value else None


def _passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV, "")
    return value.encode("utf-8") if value else None


def _read_pem(path: Path, *, what: str, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {str(path)!r} ({exc.strerror})",
                         hint=f"point {flag} at a PEM file made by `auditkit trail keygen`") from None


def load_private_key(path: str | os.PathLike[str], *, flag: str = SIGNING_KEY_ENV) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file at ``path`` (PKCS#8; encrypted ones need
    ``AUDITKIT_TRAIL_SIGNING_PASSPHRASE``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    file = Path(path)
    data = _read_pem(file, what="signing key", flag=flag)
    try:
        key = serialization.load_pem_private_key(data, password=_passphrase())
    except TypeError:  # encrypted without a passphrase, or a passphrase for an unencrypted key
        raise InputError(f"signing key {str(file)!r} is encrypted" if _passphrase() is None
                         else f"signing key {str(file)!r} is not encrypted, but {PASSPHRASE_ENV} is set",
                         hint=f"set {PASSPHRASE_ENV} to its passphrase" if _passphrase() is None
                         else f"unset {PASSPHRASE_ENV}") from None
    except ValueError:
        raise InputError(f"{str(file)!r} is not a PEM private key (or the passphrase is wrong)",
                         hint=f"point {flag} at the private key written by `auditkit trail keygen`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"signing key {str(file)!r} is not an Ed25519 key",
                         hint="make one with `auditkit trail keygen`")
    return key


def load_public_key(path: str | os.PathLike[str]) -> str:
    """The raw Ed25519 public key (hex) in the PEM file at ``path``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    file = Path(path)
    data = _read_pem(file, what="public key", flag="--public-key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise InputError(f"{str(file)!r} is not a PEM public key",
                         hint="pass the .pub.pem written by `auditkit trail keygen`") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"public key {str(file)!r} is not an Ed25519 key",
                         hint="pass the .pub.pem written by `auditkit trail keygen`")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def _write_new(path: Path, data: bytes, *, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        raise InputError(f"{str(path)!r} already exists", hint="keys are never overwritten: choose another name") from None
    except OSError as exc:
        raise InputError(f"cannot write {str(path)!r} ({exc.strerror})", hint="choose a writable folder") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def generate_key_pair(private_path: str | os.PathLike[str], public_path: str | os.PathLike[str]) -> str:
    """Write a new Ed25519 private key (PEM, mode 0600; encrypted when ``AUDITKIT_TRAIL_SIGNING_PASSPHRASE``
    is set) and its public key (PEM); returns the public key, hex. Existing files are never replaced."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private, public = Path(private_path), Path(public_path)
    if private.resolve() == public.resolve():
        raise InputError("the private and public key files are the same file", hint="give --public another name")
    for path in (private, public):
        if path.exists() or path.is_symlink():
            raise InputError(f"{str(path)!r} already exists", hint="keys are never overwritten: choose another name")
    key = Ed25519PrivateKey.generate()
    passphrase = _passphrase()
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    _write_new(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption),
               mode=0o600)
    try:
        _write_new(public, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo), mode=0o644)
    except BaseException:
        private.unlink(missing_ok=True)
        raise
    return public_hex(key)


@dataclass(frozen=True)
class TrailKeys:
    """The keys a writer holds: the HMAC secret and the Ed25519 private key, each optional."""

    hmac: bytes | None = None
    signing: Ed25519PrivateKey | None = None

    @classmethod
    def from_env(cls) -> TrailKeys:
        """``AUDITKIT_TRAIL_KEY`` (UTF-8) and the PEM file named by ``AUDITKIT_TRAIL_SIGNING_KEY``."""
        path = os.environ.get(SIGNING_KEY_ENV, "")
        return cls(hmac=hmac_key_from_env(), signing=load_private_key(path) if path else None)

    @property
    def public(self) -> str | None:
        """The signing key's public half (hex), or None."""
        return None if self.signing is None else public_hex(self.signing)
