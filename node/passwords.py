"""Password hashing with argon2id, in threads beside the event loop.

argon2 takes tens to hundreds of milliseconds of CPU by design; run on the event loop it
would stop every other request meanwhile. argon2-cffi releases the GIL while it works.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from node.config import PasswordCost


class Passwords:
    def __init__(self, cost: PasswordCost) -> None:
        self._hasher = PasswordHasher(
            time_cost=cost.time_cost,
            memory_cost=cost.memory_cost_kib,
            parallelism=cost.parallelism,
        )
        # Bounds the threads (and the memory each hash takes) whatever the number of requests.
        self._turns = asyncio.Semaphore(cost.concurrent_hashes)
        # Verifying an unknown account costs the same as a real one, so timing tells nothing.
        self._dummy_hash = self._hasher.hash("not-a-real-password")

    async def hash(self, password: str) -> str:
        async with self._turns:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        async with self._turns:
            return await asyncio.to_thread(self._verify, password_hash, password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._dummy_hash, password) and (
                password_hash is not None
            )
        except (VerificationError, InvalidHashError):
            return False
