"""Node to ActivityStreams: the documents and activities this node publishes.

One file for the direction node -> AS2 (parsing the other way is federation/vocab.py).
Every IRI of ours is minted by node.ids; any other is a remote row's stored id.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from html import escape
from typing import Any

from federation.jsonld import CANONICAL_CONTEXT, PUBLIC
from node import ids
from node.config import Settings
from node.export import PostRecord
from node.federation_policy import host_of
from node.identity import NodeIdentity
from node.ids import Iris
from node.policy import federates, shared_with_partners
from node.polls import PublishedPoll
from node.qa_windows import QaWindow
from node.storage.models import (
    LOCAL,
    ConditionGroup,
    Member,
    Post,
    ProfessionalVerification,
    Thread,
)

AS2_MEDIA_TYPE = "application/activity+json"
# A mention of a member of this node, as node/mentions.py links it (by path).
_LOCAL_MENTION = re.compile(r'<a href="(/u/[a-z0-9_]{1,30})" class="mention">')


def _time(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _paragraphs(text: str) -> str:
    return "".join(f"<p>{escape(part)}</p>" for part in text.split("\n\n") if part.strip())


class Documents:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.iris = Iris(settings.base_url)

    # ------------------------------------------------------------ identities

    def member_iri(self, member: Member) -> str:
        return member.actor_iri or self.iris.member(member.username)

    def group_iri(self, group: ConditionGroup) -> str:
        return group.actor_iri or self.iris.group(group.slug)

    def object_iri(self, post: Post, thread: Thread) -> str:
        """A thread's opening post is the thread's Page; replies are Notes of their own."""
        if post.ap_id:
            return post.ap_id
        if post.parent_id is None:
            return thread.ap_id or self.iris.thread(thread.id)
        return self.iris.post(post.id)

    def thread_iri(self, thread: Thread) -> str:
        return thread.ap_id or self.iris.thread(thread.id)

    # ------------------------------------------------------------ actors

    def _actor(
        self,
        kind: str,
        actor: ids.ActorRef,
        username: str,
        name: str,
        summary: str,
        public_pem: str,
    ) -> dict[str, Any]:
        """One of our actors: never a remote copy, whose documents are its own server's."""
        iri = self.iris.iri(actor)
        return {
            "@context": CANONICAL_CONTEXT,
            "id": iri,
            "type": kind,
            "preferredUsername": username,
            "name": name,
            "summary": summary,
            "url": iri,
            "inbox": self.iris.iri(ids.inbox_of(actor)),
            "outbox": self.iris.iri(ids.outbox_of(actor)),
            "followers": self.iris.iri(ids.followers_of(actor)),
            "endpoints": {"sharedInbox": self.iris.shared_inbox()},
            "manuallyApprovesFollowers": False,
            "publicKey": {"id": self.iris.key_id(actor), "owner": iri, "publicKeyPem": public_pem},
        }

    def person(
        self,
        member: Member,
        public_pem: str,
        verification: ProfessionalVerification | None = None,
    ) -> dict[str, Any]:
        """A member's Person; `verification` is their current one by this node, if any."""
        document = self._actor(
            "Person", ids.MemberRef(member.username), member.username, member.display_name,
            _paragraphs(member.bio), public_pem,
        )  # fmt: skip
        # Health communities: people are not to be found by search engines or by discovery.
        document |= {
            "discoverable": False,
            "indexable": False,
            "published": _time(member.created_at),
        }
        if verification is not None:
            document |= self._verified_professional(verification)
        return document

    def _verified_professional(self, verification: ProfessionalVerification) -> dict[str, Any]:
        """What Mastodon shows (a profile field), and what healthnode nodes read: our own
        extension term, with the verifying domain, which is always this node's."""
        verifier = host_of(self.settings.domain)
        claim: dict[str, Any] = {
            "title": verification.title,
            "verifier": verifier,
            "verifiedAt": _time(verification.verified_at),
        }
        if verification.expires_at is not None:
            claim["endTime"] = _time(verification.expires_at)
        return {
            "attachment": [
                {
                    "type": "PropertyValue",
                    "name": "Verified professional",
                    "value": f"{verification.title} — verified by {verifier}",
                }
            ],
            "verifiedProfessional": claim,
        }

    def group(self, group: ConditionGroup, public_pem: str) -> dict[str, Any]:
        document = self._actor(
            "Group",
            ids.GroupRef(group.slug),
            group.slug,
            group.name,
            _paragraphs(group.description),
            public_pem,
        )
        document |= {
            "attributedTo": self.iris.group_moderators(group.slug),
            "postingRestrictedToMods": group.posting_restricted_to_mods,
            "featured": self.iris.group_featured(group.slug),
            "published": _time(group.created_at),
            "discoverable": True,
        }
        if shared_with_partners(group.visibility):
            # Shown only to partner domains' actors (docs/FEDERATION.md, "Partner groups"):
            # not discoverable; its own inbox path answers as a missing group's does to
            # everyone, so activities for it come to the shared inbox, where the sender is
            # authenticated before the group is looked up. A partner domain's follows are
            # accepted at once (docs/POLICY.md), so none waits for approval.
            document |= {
                "inbox": self.iris.shared_inbox(),
                "discoverable": False,
                "manuallyApprovesFollowers": False,
            }
        return document

    def application(self, public_pem: str, identity: NodeIdentity) -> dict[str, Any]:
        """The instance actor, named and described as the admins set the node's identity."""
        document = self._actor(
            "Application", ids.InstanceActorRef(), self.settings.domain, identity.name,
            _paragraphs(identity.description), public_pem,
        )  # fmt: skip
        document["manuallyApprovesFollowers"] = True
        if identity.logo_path and identity.logo_type:
            document["icon"] = {
                "type": "Image",
                "mediaType": identity.logo_type,
                "url": self.settings.base_url + identity.logo_path,
            }
        return document

    def collection(self, iri: str, total: int, items: list[Any] | None = None) -> dict[str, Any]:
        document: dict[str, Any] = {
            "@context": CANONICAL_CONTEXT,
            "id": iri,
            "type": "OrderedCollection",
            "totalItems": total,
        }
        if items is not None:
            document["orderedItems"] = items
        return document

    def paged_collection(
        self,
        iri: str,
        page_iri: Callable[[int], str],
        total: int,
        items: list[dict[str, Any]],
        page: int | None,
        size: int,
    ) -> dict[str, Any]:
        """An OrderedCollection with its newest page inline (Lemmy reads the collection
        itself), or, asked for page N, that OrderedCollectionPage with its next link."""
        items = [{k: v for k, v in item.items() if k != "@context"} for item in items]
        if page is None:
            document = self.collection(iri, total, items)
            document["first"] = page_iri(1)
            return document
        document = self.collection(page_iri(page), total, items)
        document["type"] = "OrderedCollectionPage"
        document["partOf"] = iri
        if page * size < total:
            document["next"] = page_iri(page + 1)
        return document

    # ------------------------------------------------------------ objects

    def post_object(
        self,
        post: Post,
        thread: Thread,
        group: ConditionGroup,
        author: Member,
        parent: tuple[Post, Member] | None,
        qa: QaWindow | None = None,
        now: datetime | None = None,
        poll: PublishedPoll | None = None,
        mentioned: Sequence[Member] = (),
    ) -> dict[str, Any]:
        """The Page (opening post) or Note (reply) for a post; an expert Q&A's Page carries
        its window as `startTime` and `endTime`, and has comments off once it ended; an
        opening post with a poll is a `Question` (Mastodon's and PieFed's shape) with the
        Page's properties. The people it `mentioned` are its `Mention` tags, and those on
        other servers are in its `cc`, in a public group only (docs/FEDERATION.md,
        "Mentions")."""
        iri = self.object_iri(post, thread)
        group_iri = self.group_iri(group)
        thread_iri = self.thread_iri(thread)
        document: dict[str, Any] = {
            "@context": CANONICAL_CONTEXT,
            "id": iri,
            "type": "Page" if post.parent_id is None else "Note",
            "attributedTo": self.member_iri(author),
            "content": self._absolute_mentions(post.content_html),
            "mediaType": "text/html",
            "source": {"content": post.source, "mediaType": "text/markdown"},
            "published": _time(post.created_at),
            "audience": group_iri,
            "context": thread_iri,
            "url": iri,
        }
        if post.edited_at:
            document["updated"] = _time(post.edited_at)
        if post.content_warning:
            document["summary"] = post.content_warning
            document["sensitive"] = True
        else:
            document["sensitive"] = False
        if post.parent_id is None:
            document["name"] = thread.title
            # Lemmy's names for a pinned thread and for one locked to replies.
            document["stickied"] = thread.pinned_at is not None
            document["commentsEnabled"] = thread.locked_at is None
            if qa is not None:
                document["startTime"] = _time(qa.starts_at)
                document["endTime"] = _time(qa.ends_at)
                if now is not None and qa.ended(now):
                    document["commentsEnabled"] = False
            document["to"] = [group_iri, PUBLIC]
            document["cc"] = []
            if poll is not None:
                document |= _question(poll)
        else:
            assert parent is not None
            parent_post, parent_author = parent
            document["inReplyTo"] = self.object_iri(parent_post, thread)
            document["to"] = [PUBLIC]
            document["cc"] = list(dict.fromkeys([group_iri, self.member_iri(parent_author)]))
        if shared_with_partners(group.visibility):
            # Followers-only: never Public, to or cc (docs/FEDERATION.md, "Partner groups").
            # Another node's partner group is addressed alone: it announces to its followers.
            followers = [self.iris.group_followers(group.slug)] if group.domain == "" else []
            document["to"] = [group_iri, *followers]
            document["cc"] = [iri for iri in document["cc"] if iri != group_iri]
        if mentioned and federates(group.visibility):
            document["tag"] = [self._mention(person) for person in mentioned]
            elsewhere = [self.member_iri(p) for p in mentioned if p.domain != LOCAL]
            document["cc"] = list(dict.fromkeys([*document["cc"], *elsewhere]))
        return document

    def _mention(self, person: Member) -> dict[str, Any]:
        domain = person.domain or self.settings.domain
        return {
            "type": "Mention",
            "href": self.member_iri(person),
            "name": f"@{person.username}@{domain}",
        }

    def _absolute_mentions(self, content_html: str) -> str:
        """Mentions of members of this node link to their profile by path (node/mentions.py);
        another server needs the whole IRI."""
        if 'class="mention"' not in content_html:
            return content_html
        return _LOCAL_MENTION.sub(
            lambda found: f'<a href="{self.iris.base_url}{found.group(1)}" class="mention">',
            content_html,
        )

    # ------------------------------------------------------------ a member's archive

    def archived_outbox(self, member: Member) -> dict[str, Any]:
        """The head of outbox.json in a member's archive (node/export.py adds its items)."""
        return {
            "@context": CANONICAL_CONTEXT,
            "id": self.iris.member_outbox(member.username),
            "type": "OrderedCollection",
        }

    def archived_create(self, record: PostRecord) -> dict[str, Any]:
        """A post's `Create` for the member's archive, in the shape `Outbox` federates it.

        Its id is the object's IRI with `#create` (node.ids): the federated Create's own id
        is not kept per post. A post in a private group never left this node: its Create is
        addressed to the group alone, never to Public, and claims nothing about delivery."""
        obj = self.post_object(
            record.post, record.thread, record.group, record.author, record.parent
        )
        group_iri = self.group_iri(record.group)
        if not federates(record.group.visibility):
            obj |= {"to": [group_iri], "cc": []}
        document = self._activity(
            self.iris.archived_create(obj["id"]), "Create", self.member_iri(record.author), obj,
            to=obj["to"], cc=obj["cc"], audience=group_iri, published=obj["published"],
        )  # fmt: skip
        del document["@context"]  # the collection's covers it
        return document

    def tombstone(self, iri: str, deleted: datetime | None) -> dict[str, Any]:
        return {
            "@context": CANONICAL_CONTEXT,
            "id": iri,
            "type": "Tombstone",
            "deleted": _time(deleted),
        }

    # ------------------------------------------------------------ activities

    def activity(
        self,
        activity_id: str,
        kind: str,
        actor: str,
        obj: Any,
        *,
        to: list[str],
        cc: list[str] | None = None,
        audience: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        return self._activity(
            self.iris.activity(activity_id), kind, actor, obj,
            to=to, cc=cc, audience=audience, **extra,
        )  # fmt: skip

    def _activity(
        self,
        iri: str,
        kind: str,
        actor: str,
        obj: Any,
        *,
        to: list[str],
        cc: list[str] | None = None,
        audience: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        document: dict[str, Any] = {
            "@context": CANONICAL_CONTEXT,
            "id": iri,
            "type": kind,
            "actor": actor,
            "object": _without_context(obj),
            "to": to,
            "cc": cc or [],
        }
        if audience:
            document["audience"] = audience
        document.update(extra)
        return document


def _question(poll: PublishedPoll) -> dict[str, Any]:
    """A poll's properties on its thread's object, as Mastodon publishes a `Question`."""
    choices = [
        {"type": "Note", "name": name, "replies": {"type": "Collection", "totalItems": count}}
        for name, count in poll.options
    ]
    document: dict[str, Any] = {
        "type": "Question",
        "anyOf" if poll.multiple else "oneOf": choices,
        "endTime": _time(poll.closes_at),
        "votersCount": poll.voters,
    }
    if poll.closed:
        document["closed"] = _time(poll.closes_at)
    return document


def _without_context(value: Any) -> Any:
    """An embedded object keeps everything but its own @context (the outer one covers it);
    an activity received from elsewhere is embedded verbatim."""
    if isinstance(value, dict) and value.get("@context") is CANONICAL_CONTEXT:
        return {key: item for key, item in value.items() if key != "@context"}
    return value
