"""Which HTTP signature family a server accepts from us: double-knocking, as Fedify does.

A delivery is first signed with RFC 9421, unless the receiving origin is remembered to want
draft-cavage. If the answer is 400 or 401 (the usual refusal of a signature a server does not
understand: Mastodon before 4.5, Lemmy, GoToSocial and Pleroma read only draft-cavage), the
same request is sent again at once, signed with the other family. Whichever family got a 2xx
is remembered for its origin for a day (`REMEMBER_FOR`), so that later deliveries there are
signed once, with the family that works; after that the origin is asked afresh, so a server
that learns RFC 9421 gets it within a day.

The memory is this process's own (bounded to `ORIGINS_REMEMBERED` origins, least recently
learnt forgotten first): each worker process learns each origin once, and a restart forgets,
which costs at most one refused request per origin. Nothing is stored in the database.
The decision is made here only; FederationClient.post_signed does the knocking.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

SignatureFamily = Literal["rfc9421", "draft-cavage"]
RFC9421: SignatureFamily = "rfc9421"
CAVAGE: SignatureFamily = "draft-cavage"

REMEMBER_FOR = timedelta(days=1)
ORIGINS_REMEMBERED = 10_000
# The answers that mean "this signature is not one I accept": knock again with the other.
REFUSALS = frozenset({400, 401})


def origin_of(url: str) -> str:
    """scheme://host[:port], lower case: what one server's memory entry is kept under."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def other(family: SignatureFamily) -> SignatureFamily:
    return CAVAGE if family == RFC9421 else RFC9421


class SignaturePreference:
    """Per origin, the signature family that last got a 2xx, until it expires."""

    def __init__(
        self, remember_for: timedelta = REMEMBER_FOR, size: int = ORIGINS_REMEMBERED
    ) -> None:
        self.remember_for = remember_for
        self.size = size
        self._known: OrderedDict[str, tuple[SignatureFamily, datetime]] = OrderedDict()

    def known(self, origin: str, now: datetime) -> SignatureFamily | None:
        """The family remembered for the origin, if it has not expired by `now`."""
        entry = self._known.get(origin)
        if entry is None:
            return None
        family, until = entry
        if now >= until:
            del self._known[origin]
            return None
        return family

    def first(self, origin: str, now: datetime) -> SignatureFamily:
        """The family to sign the first request to the origin with."""
        return self.known(origin, now) or RFC9421

    def remember(self, origin: str, family: SignatureFamily, now: datetime) -> None:
        """The origin accepted `family`. Remembered for `remember_for` from when it was learnt:
        further successes do not extend it, so that a server remembered to want draft-cavage
        is offered RFC 9421 again once it expires."""
        if self.known(origin, now) == family:
            return
        self._known.pop(origin, None)
        self._known[origin] = (family, now + self.remember_for)
        while len(self._known) > self.size:
            self._known.popitem(last=False)

    def __len__(self) -> int:
        return len(self._known)
