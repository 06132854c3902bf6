"""CSRF tokens bound to the browser: to its session when signed in, else to a random seed cookie.

Signing in changes the session, so a form rendered before is refused as stale.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

CSRF_FIELD = "csrf_token"


def new_seed() -> str:
    return secrets.token_urlsafe(24)


def token_for(secret: bytes, basis: str) -> str:
    return hmac.new(secret, b"csrf:" + basis.encode(), hashlib.sha256).hexdigest()


def token_matches(secret: bytes, basis: str | None, offered: str) -> bool:
    if not basis or not offered:
        return False
    return hmac.compare_digest(token_for(secret, basis), offered)
