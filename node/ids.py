"""The one place that mints this node's IRIs and page paths.

Every member, group, thread and post IRI is minted from the configured domain here, so that
federation can publish them unchanged. Routes in web/ are registered from the same patterns.
"""

from __future__ import annotations

import secrets
import time

MEMBER_PATH = "/u/{username}"
GROUP_PATH = "/g/{slug}"
THREAD_PATH = "/t/{thread_id}"
POST_PATH = "/p/{post_id}"
INSTANCE_ACTOR_PATH = "/actor"
ACTIVITY_PATH = "/activities/{activity_id}"
SHARED_INBOX_PATH = "/inbox"

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_object_id() -> str:
    """A time-ordered, unguessable id: 10 characters of milliseconds, 10 of randomness.

    Not an integer sequence, so ids reveal neither counts nor the ids of private posts.
    """
    millis = int(time.time() * 1000)
    stamp = ""
    for _ in range(10):
        stamp = _ALPHABET[millis % 32] + stamp
        millis //= 32
    return stamp + "".join(secrets.choice(_ALPHABET) for _ in range(10))


def member_path(username: str) -> str:
    return MEMBER_PATH.format(username=username)


def group_path(slug: str, domain: str = "") -> str:
    """A group's page here; a remote group's copy is addressed as slug@domain."""
    return GROUP_PATH.format(slug=f"{slug}@{domain}" if domain else slug)


def thread_path(thread_id: str) -> str:
    return THREAD_PATH.format(thread_id=thread_id)


def post_path(post_id: str) -> str:
    return POST_PATH.format(post_id=post_id)


class Iris:
    """Absolute IRIs for one node's base URL (scheme and domain)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def member(self, username: str) -> str:
        return self.base_url + member_path(username)

    def group(self, slug: str) -> str:
        return self.base_url + group_path(slug)

    def thread(self, thread_id: str) -> str:
        return self.base_url + thread_path(thread_id)

    def post(self, post_id: str) -> str:
        return self.base_url + post_path(post_id)

    def instance_actor(self) -> str:
        return self.base_url + INSTANCE_ACTOR_PATH

    def activity(self, activity_id: str) -> str:
        return self.base_url + ACTIVITY_PATH.format(activity_id=activity_id)

    def shared_inbox(self) -> str:
        return self.base_url + SHARED_INBOX_PATH

    def local_path(self, iri: str) -> str | None:
        """The path of one of our own IRIs, or None for anyone else's."""
        if iri.startswith(self.base_url + "/"):
            return iri[len(self.base_url) :].split("#", 1)[0].split("?", 1)[0]
        return None
