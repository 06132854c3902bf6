"""FEP-521a keys: a `Multikey`'s `publicKeyMultibase`, read into a public key.

Only Ed25519 is read: multibase base58btc (the `z` prefix) of the multicodec `ed25519-pub`
(0xed 0x01, as an unsigned varint) followed by the 32 raw key bytes. Pure functions, no I/O.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_VALUES = {char: index for index, char in enumerate(BASE58_ALPHABET)}
ED25519_PUB = b"\xed\x01"
# 34 bytes encode to at most 47 base58 characters; anything much longer is not an Ed25519 key.
MAX_MULTIBASE_LENGTH = 100


class MultikeyError(ValueError):
    """Not a `publicKeyMultibase` this node can read."""


def base58btc_decode(text: str) -> bytes:
    """Bitcoin-alphabet base58: leading '1's are leading zero bytes."""
    number = 0
    for char in text:
        value = _BASE58_VALUES.get(char)
        if value is None:
            raise MultikeyError(f"{char!r} is not a base58btc character")
        number = number * 58 + value
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\x00" * zeros + body


def ed25519_public_key(multibase: object) -> ed25519.Ed25519PublicKey:
    """The Ed25519 key of a `publicKeyMultibase` value, or MultikeyError."""
    if not isinstance(multibase, str) or not 2 <= len(multibase) <= MAX_MULTIBASE_LENGTH:
        raise MultikeyError("publicKeyMultibase must be a short string")
    if not multibase.startswith("z"):
        raise MultikeyError("only base58btc ('z') multibase is read")
    decoded = base58btc_decode(multibase[1:])
    if not decoded.startswith(ED25519_PUB):
        raise MultikeyError("not an ed25519-pub multicodec key")
    raw = decoded[len(ED25519_PUB) :]
    if len(raw) != 32:
        raise MultikeyError("an Ed25519 public key is 32 bytes")
    try:
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise MultikeyError("not a usable Ed25519 public key") from None


def ed25519_pem(multibase: object) -> str:
    """The key as an SPKI PEM, the form the remote key cache stores every key in."""
    return (
        ed25519_public_key(multibase)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
