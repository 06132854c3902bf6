"""RSA keys for tests: a small pool made once per run and handed out in turn.

Generating an RSA-2048 key costs ~40 ms; tests create many actors. Consecutive actors get
distinct keys (the pool is larger than any test's actor count), which is what the signature
tests rely on: one actor's key never verifies another's signature within a test.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from cryptography.hazmat.primitives.asymmetric import rsa

from keys.pairs import KeyPair, public_pem_of, seal_private_key

POOL_SIZE = 48
_pool: list[rsa.RSAPrivateKey] = []
_turn: Iterator[int] = itertools.cycle(range(POOL_SIZE))


def pooled_key_pair(node_secret: bytes) -> KeyPair:
    index = next(_turn)
    while len(_pool) <= index:
        _pool.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    key = _pool[index]
    return KeyPair(public_pem_of(key), seal_private_key(key, node_secret))


def fill() -> None:
    """Make the whole pool now, for tests that time the event loop while members are made."""
    while len(_pool) < POOL_SIZE:
        _pool.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
