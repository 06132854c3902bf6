"""RSA-2048 key pairs, with the private half encrypted by the node secret."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


@dataclass(frozen=True)
class KeyPair:
    public_pem: str
    private_pem_encrypted: str


def generate_key_pair(node_secret: bytes) -> KeyPair:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(node_secret),
    )
    return KeyPair(public_pem.decode(), private_pem.decode())


def load_private_key(pair: KeyPair, node_secret: bytes) -> PrivateKeyTypes:
    return serialization.load_pem_private_key(
        pair.private_pem_encrypted.encode(), password=node_secret
    )
