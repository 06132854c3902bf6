"""RSA-2048 key pairs; the private half is sealed with AES-256-GCM under the node secret.

The node secret has full entropy, so the sealing key is derived with HKDF, not a slow password
hash: opening a key costs microseconds, which matters when every delivery signs.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEALED_PREFIX = "aesgcm1:"


class SealedKeyError(Exception):
    """A stored key cannot be opened: wrong node secret or damaged data."""


@dataclass(frozen=True)
class KeyPair:
    public_pem: str
    private_sealed: str


KeyFactory = Callable[[bytes], KeyPair]


def _sealing_key(node_secret: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"healthnode actor keys v1"
    ).derive(node_secret)


def seal_private_key(private_key: rsa.RSAPrivateKey, node_secret: bytes) -> str:
    der = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    nonce = os.urandom(12)
    sealed = AESGCM(_sealing_key(node_secret)).encrypt(nonce, der, b"actor-key")
    return SEALED_PREFIX + base64.b64encode(nonce + sealed).decode()


def public_pem_of(private_key: rsa.RSAPrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def generate_key_pair(node_secret: bytes) -> KeyPair:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return KeyPair(public_pem_of(private_key), seal_private_key(private_key, node_secret))


@lru_cache(maxsize=4096)
def open_private_key(private_sealed: str, node_secret: bytes) -> rsa.RSAPrivateKey:
    """Open a sealed key (cached: parsing an RSA key costs about a millisecond)."""
    if not private_sealed.startswith(SEALED_PREFIX):
        raise SealedKeyError("unknown key sealing format")
    try:
        blob = base64.b64decode(private_sealed[len(SEALED_PREFIX) :])
        der = AESGCM(_sealing_key(node_secret)).decrypt(blob[:12], blob[12:], b"actor-key")
    except (InvalidTag, ValueError):
        raise SealedKeyError("cannot open the key: wrong node secret or damaged data") from None
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SealedKeyError("stored key is not RSA")
    return key
