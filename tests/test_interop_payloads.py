"""Payloads as other fediverse servers send them, replayed against a real node over real HTTP.

Each payload in tests/fixtures/ reproduces what Mastodon, Lemmy, Mbin, PieFed, Pleroma,
Misskey, GoToSocial, Friendica, PeerTube, NodeBB or WordPress actually sends (their test
fixtures and documentation; tests/fixtures/SOURCES.md says where each comes from). Only the
ids are rewritten, through placeholders substituted at load time, so that the sender lives on
the FakeRemote, which publishes the peer's own actor shape with a key generated here, and so
that the objects it talks about are this node's group, thread and posts.

A peer's payloads are played as a conversation, in the order that peer would send them to a
group here (follow first, then post, react, edit, delete, leave), one fresh node per peer. Each
step states its outcome and why: applied (and the resulting state is read from the database),
refused with a clear 4xx (and nothing kept), or accepted and ignored (202, no effect). Whatever
the payloads, the node never answers 5xx, no processing ends in a crash, every stored post is
plain sanitised HTML, a content warning is shown as text, and the group page is still served.
The fediverse-pasture-inputs package supplies many more shapes of Create{Note}, replayed the
same way at the end of this file.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import fediverse_pasture_inputs
import pytest
from sqlalchemy import select

from node import groups, membership, posts
from node.html_text import html_to_text
from node.policy import Viewer
from node.storage.models import (
    ConditionGroup,
    InboxItem,
    Member,
    Membership,
    Post,
    Reaction,
    Report,
    Thread,
)
from node.text import CODE_BLOCK_ATTRIBUTES
from tests.federation_harness import eventually
from tests.peers import (
    AS2,
    PUBLIC,
    Answer,
    FakeRemote,
    Hospital,
    cavage_headers,
    encode,
    post,
    public_pem,
)

FIXTURES = Path(__file__).parent / "fixtures"

# What docs/FEDERATION.md promises survives sanitising: plain formatting and links, nothing
# active. Written out here, not imported, so that a change in the sanitiser is noticed.
PLAIN_TAGS = frozenset(
    {"p", "br", "strong", "em", "del", "s", "a", "code", "pre", "blockquote", "ul", "ol", "li",
     "h1", "h2", "h3", "h4", "h5", "h6", "hr"}
)  # fmt: skip
PLAIN_ATTRIBUTES = {
    "a": {"href", "title", "rel"},
    "ol": {"start"},
    "pre": set(CODE_BLOCK_ATTRIBUTES),
}
# A processing step that died on an unexpected exception is recorded as "SomeError: ...".
CRASH = re.compile(r"^\w*(Error|Exception)\b")


# ---------------------------------------------------------------- the scene


@dataclass
class Scene:
    """The node under test with a thread and a reply by its member, and the peer's server."""

    hospital: Hospital
    remote: FakeRemote
    third: FakeRemote
    group_id: int
    nurse_id: int
    thread_iri: str
    first_post_id: str
    reply_iri: str
    reply_post_id: str
    key_ids: dict[str, str] = field(default_factory=dict)  # actor IRI -> its key id
    answers: list[Answer] = field(default_factory=list)
    actor_gets_before: int = 0  # how often the sender's actor was fetched before this step

    @property
    def nurse_iri(self) -> str:
        return self.hospital.base_url + "/u/nurse"

    def tokens(self) -> dict[str, str]:
        return {
            "{{remote}}": self.remote.base_url,
            "{{third}}": self.third.base_url,
            "{{group}}": self.hospital.group_iri,
            "{{thread}}": self.thread_iri,
            "{{reply}}": self.reply_iri,
            "{{nurse}}": self.nurse_iri,
            "{{hospital_domain}}": self.hospital.running.domain,
            "{{public_key_pem}}": public_pem(self.remote.keys["mallory"]),
        }

    def load(self, name: str) -> dict[str, Any]:
        text = (FIXTURES / name).read_text()
        for token, value in self.tokens().items():
            text = text.replace(token, json.dumps(value)[1:-1])  # JSON-escaped in place
        document: dict[str, Any] = json.loads(text)
        return document

    def serve(self, name: str) -> dict[str, Any]:
        """Publish a document (an actor, or an object fetched by id) on the peer's server."""
        document = self.load(name)
        self.remote.documents[urlsplit(document["id"]).path or "/"] = document
        key = document.get("publicKey")
        if isinstance(key, dict):
            self.key_ids[document["id"]] = key["id"]
        return document

    def inbox_url(self, which: str) -> str:
        return {
            "group": self.hospital.group_inbox,
            "shared": self.hospital.base_url + "/inbox",
            "nurse": self.nurse_iri + "/inbox",
        }[which]

    async def send(self, document: dict[str, Any], inbox: str = "group") -> Answer:
        """POST as the peer does: draft-cavage over (request-target) host date digest, signed
        by the key its actor document publishes."""
        actor = document.get("actor")
        key_id = self.key_ids.get(actor) if isinstance(actor, str) else None
        url = self.inbox_url(inbox)
        body = encode(document)
        headers = cavage_headers(
            url=url, body=body, key=self.remote.keys["mallory"],
            key_id=key_id or f"{self.remote.base_url}/unknown#main-key", now=self.hospital.now(),
        )  # fmt: skip
        answer = await post(url, body, headers)
        self.answers.append(answer)
        assert answer.status < 500, answer
        return answer

    async def db(self, statement: Any) -> list[Any]:
        async with self.hospital.running.node.transaction() as session:
            return list((await session.execute(statement)).all())


async def make_scene(hospital: Hospital, remote: FakeRemote, third: FakeRemote) -> Scene:
    """A thread and a reply by the node's own member, before any peer shows up."""
    node = hospital.running.node
    async with node.transaction() as session:
        nurse = (await session.execute(select(Member).where(Member.username == "nurse"))).scalar()
        assert nurse is not None
        view = await groups.view_group(session, "t1d", Viewer(nurse.id))
        thread = await posts.start_thread(
            session, node.settings.limits, view, title="Dawn phenomenon",
            draft=posts.Draft("What helps with morning highs?"), now=node.clock.now(),
        )  # fmt: skip
        first = await posts.first_post(session, thread.id)
        reply = await posts.reply(
            session, node.settings.limits, Viewer(nurse.id), thread_id=thread.id,
            parent_id=first.id, draft=posts.Draft("Adjusting basal overnight helped me."),
            now=node.clock.now(),
        )  # fmt: skip
        ids = (view.group.id, nurse.id, thread.id, first.id, reply.id)
    group_id, nurse_id, thread_id, first_id, reply_id = ids
    base = hospital.base_url
    return Scene(
        hospital, remote, third, group_id, nurse_id, f"{base}/t/{thread_id}", first_id,
        f"{base}/p/{reply_id}", reply_id,
    )  # fmt: skip


# ---------------------------------------------------------------- reading the node's state


async def inbox_item(scene: Scene, activity_id: str) -> InboxItem | None:
    rows = await scene.db(select(InboxItem).where(InboxItem.activity_id == activity_id))
    return rows[0][0] if rows else None


async def settled(scene: Scene, activity_id: str) -> str:
    """How processing of a stored activity ended: done, failed, or waits (to be retried)."""

    async def outcome() -> str | None:
        item = await inbox_item(scene, activity_id)
        assert item is not None, f"{activity_id} was not stored"
        if item.state in ("done", "failed"):
            return item.state
        return "waits" if item.attempts > 0 else None

    return await eventually(outcome, f"{activity_id} processed", seconds=15)


async def member_id_of(scene: Scene, actor_iri: str) -> int | None:
    rows = await scene.db(select(Member.id).where(Member.actor_iri == actor_iri))
    return rows[0][0] if rows else None


async def post_by_ap_id(scene: Scene, ap_id: str) -> tuple[Post, Thread] | None:
    rows = await scene.db(
        select(Post, Thread).join(Thread, Thread.id == Post.thread_id).where(Post.ap_id == ap_id)
    )
    return (rows[0][0], rows[0][1]) if rows else None


async def snapshot(scene: Scene) -> dict[str, list[tuple[Any, ...]]]:
    """Everything an ignored or refused payload must leave as it was."""
    stored_posts = [
        (p.id, p.ap_id, p.source, p.content_html, p.content_warning, p.deleted_at, p.edited_at)
        for (p,) in await scene.db(select(Post))
    ]
    return {
        "posts": sorted(stored_posts, key=repr),
        "threads": sorted((t.id, t.title, t.group_id) for (t,) in await scene.db(select(Thread))),
        "memberships": sorted(
            (m.group_id, m.member_id, m.state, m.role)
            for (m,) in await scene.db(select(Membership))
        ),
        "reactions": sorted(
            (r.post_id, r.member_id, r.kind) for (r,) in await scene.db(select(Reaction))
        ),
        "groups": sorted(
            (g.id, g.name, g.description) for (g,) in await scene.db(select(ConditionGroup))
        ),
    }


class TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


def assert_plain_html(html: str) -> None:
    collector = TagCollector()
    collector.feed(html)
    for tag, attrs in collector.found:
        assert tag in PLAIN_TAGS, f"<{tag}> survived sanitising: {html[:300]}"
        for name, value in attrs:
            assert name in PLAIN_ATTRIBUTES.get(tag, set()), f"{tag}[{name}] survived: {html[:300]}"
            if tag == "pre":  # our own values, whatever the sender wrote (keyboard scrolling)
                assert value == CODE_BLOCK_ATTRIBUTES[name], html
            if name == "href":
                assert urlsplit(value or "").scheme in ("http", "https", "mailto", ""), html


async def assert_node_is_healthy(scene: Scene) -> None:
    """The invariants: no 5xx, no crash in processing, only plain HTML kept, group page up."""
    assert all(answer.status < 500 for answer in scene.answers), scene.answers
    errors = [item.error for (item,) in await scene.db(select(InboxItem)) if item.error]
    assert not [error for error in errors if CRASH.match(error)], errors
    stored_posts = [stored for (stored,) in await scene.db(select(Post))]
    for stored in stored_posts:
        assert_plain_html(stored.content_html)
    async with aiohttp.ClientSession() as session:
        # A content warning is kept as received; its page must show it as text, not markup
        for stored in stored_posts:
            if "<" in stored.content_warning and stored.deleted_at is None:
                url = f"{scene.hospital.base_url}/t/{stored.thread_id}"
                async with session.get(url, headers={"Accept": "text/html"}) as thread_page:
                    assert thread_page.status == 200, url
                    assert stored.content_warning not in await thread_page.text(), url
        async with session.get(scene.hospital.group_iri, headers={"Accept": "text/html"}) as page:
            assert page.status == 200, await page.text()
        async with session.get(
            scene.hospital.group_iri, headers={"Accept": "application/activity+json"}
        ) as actor:
            assert actor.status == 200
            assert json.loads(await actor.text())["id"] == scene.hospital.group_iri


# ---------------------------------------------------------------- expected effects


def object_id(payload: dict[str, Any]) -> str:
    value = payload["object"]
    return value if isinstance(value, str) else value["id"]


@dataclass(frozen=True)
class Joined:
    """The sender is (or is no longer) an active member of the group here."""

    active: bool = True

    async def check(self, scene: Scene, payload: dict[str, Any]) -> None:
        member = await member_id_of(scene, payload["actor"])
        rows = await scene.db(
            select(Membership.state).where(
                Membership.group_id == scene.group_id, Membership.member_id == member
            )
        )
        assert [state for (state,) in rows] == (["active"] if self.active else []), rows


@dataclass(frozen=True)
class Accepted:
    """The group answered with an Accept, embedding the Follow, at the actor's own inbox."""

    async def check(self, scene: Scene, payload: dict[str, Any]) -> None:
        actor = scene.remote.documents[urlsplit(payload["actor"]).path]
        inbox_path = urlsplit(actor["inbox"]).path

        async def accept() -> dict[str, Any] | None:
            for request in scene.remote.received:
                if request.method == "POST" and request.path == inbox_path:
                    document = request.json()
                    if document.get("type") == "Accept":
                        return document
            return None

        document = await eventually(accept, "the Accept at the peer")
        assert document["actor"] == scene.hospital.group_iri
        assert document["object"]["id"] == payload["id"]


@dataclass(frozen=True)
class NewThread:
    """A thread exists for the payload's object, with this title, text and HTML."""

    title: str
    text: str
    html: str = ""
    warning: str = ""
    remote_group: str = ""  # the path of the remote group it belongs to, if not ours

    async def check(self, scene: Scene, payload: dict[str, Any]) -> None:
        found = await post_by_ap_id(scene, announced_object_id(payload))
        assert found is not None, "no thread was created"
        stored, thread = found
        assert stored.parent_id is None
        assert thread.title == self.title.replace(
            "{{hospital_domain}}", scene.hospital.running.domain
        )
        assert self.text in stored.source, stored.source
        assert self.html in stored.content_html, stored.content_html
        warning = self.warning
        if warning == CUT_SUMMARY:
            limit = scene.hospital.running.node.settings.limits.content_warning_max
            # Shown as text: an HTML summary is read as its text (as html_to_text reads it).
            warning = html_to_text(payload["object"]["summary"])[:limit].strip()
        assert stored.content_warning == warning
        group_iri = scene.remote.base_url + self.remote_group if self.remote_group else None
        rows = await scene.db(select(ConditionGroup).where(ConditionGroup.id == thread.group_id))
        assert rows[0][0].actor_iri == group_iri


CUT_SUMMARY = "{{summary, cut to the content-warning limit}}"  # FEDERATION.md: CWs are cut


@dataclass(frozen=True)
class OnlyPost:
    """The thread of the payload's object holds its opening post and nothing else."""

    async def check(self, scene: Scene, payload: dict[str, Any]) -> None:
        found = await post_by_ap_id(scene, object_id(payload))
        assert found is not None
        rows = await scene.db(select(Post.id).where(Post.thread_id == found[1].id))
        assert len(rows) == 1, rows


def announced_object_id(payload: dict[str, Any]) -> str:
    if payload["type"] == "Announce":
        return object_id(payload["object"])
    return object_id(payload)


@dataclass(frozen=True)
class NewReply:
    """A reply exists for the payload's object, under the given parent, with this text."""

    parent: str  # "thread", "reply", or a placeholder IRI of another remote post
    text: str

    async def check(self, scene: Scene, payload: dict[str, Any]) -> None:
        found = await post_by_ap_id(scene, object_id(payload))
        assert found is not None, "no reply was created"
        stored, _ = found
        if self.parent == "thread":
            assert stored.parent_id == scene.first_post_id
        elif self.parent == "reply":
            assert stored.parent_id == scene.reply_post_id
        else:
            parent_iri = self.parent.replace("{{remote}}", scene.remote.base_url)
            parent = await post_by_ap_id(scene, parent_iri)
            assert parent is not None and stored.parent_id == parent[0].id
        assert self.text in stored.source, stored.source


@dataclass(frozen=True)
class Helpful:
    """The sender's "helpful" mark on the thread's first post or on the reply."""

    on: str  # "thread" or "reply"
    present: bool = True

    async def check(self, scene: Scene, payload: dict[str, Any]) -> None:
        member = await member_id_of(scene, payload["actor"])
        post_id = scene.first_post_id if self.on == "thread" else scene.reply_post_id
        rows = await scene.db(
            select(Reaction.kind).where(Reaction.post_id == post_id, Reaction.member_id == member)
        )
        assert [kind for (kind,) in rows] == (["helpful"] if self.present else []), rows


@dataclass(frozen=True)
class Edited:
    title: str | None = None
    text: str | None = None

    async def check(self, scene: Scene, payload: dict[str, Any]) -> None:
        found = await post_by_ap_id(scene, object_id(payload))
        assert found is not None
        stored, thread = found
        assert stored.edited_at is not None
        if self.title is not None:
            assert thread.title == self.title
        if self.text is not None:
            assert self.text in stored.source, stored.source


@dataclass(frozen=True)
class Deleted:
    async def check(self, scene: Scene, payload: dict[str, Any]) -> None:
        found = await post_by_ap_id(scene, object_id(payload))
        assert found is not None
        assert found[0].deleted_at is not None


@dataclass(frozen=True)
class Erased:
    """The actor deleted their account: nothing they wrote here keeps its text, and they
    belong to no group here any more."""

    async def check(self, scene: Scene, payload: dict[str, Any]) -> None:
        member = await member_id_of(scene, payload["actor"])
        mine = select(Post.deleted_at, Post.source).where(Post.author_id == member)
        written = await scene.db(mine)
        assert written, "the account had written nothing here: the check would prove nothing"
        assert all(deleted is not None and source == "" for deleted, source in written), written
        rows = await scene.db(select(Membership.state).where(Membership.member_id == member))
        assert [state for (state,) in rows] == [], rows


@dataclass(frozen=True)
class BannedThere:
    """The node's member is banned from the remote group (at this path on the peer)."""

    group_path: str
    banned: bool = True  # False: the ban was lifted, and nothing else took its place

    async def check(self, scene: Scene, payload: dict[str, Any]) -> None:
        rows = await scene.db(
            select(Membership.state)
            .join(ConditionGroup, ConditionGroup.id == Membership.group_id)
            .where(
                ConditionGroup.actor_iri == scene.remote.base_url + self.group_path,
                Membership.member_id == scene.nurse_id,
            )
        )
        assert [state for (state,) in rows] == (["banned"] if self.banned else []), rows


@dataclass(frozen=True)
class ActorFetchedAgain:
    """Update{Person}: the actor document was fetched again, not taken from the payload."""

    async def check(self, scene: Scene, payload: dict[str, Any]) -> None:
        gets = scene.remote.gets(urlsplit(payload["actor"]).path)
        assert len(gets) > scene.actor_gets_before, [r.path for r in scene.remote.received]


@dataclass(frozen=True)
class Reported:
    """An open report of our post, from the sender's domain, naming no reporter."""

    on: str  # "thread" or "reply"
    comment: str

    async def check(self, scene: Scene, payload: dict[str, Any]) -> None:
        rows = await scene.db(select(Report).where(Report.flag_activity_id == payload["id"]))
        assert len(rows) == 1, rows
        report = rows[0][0]
        post_id = scene.first_post_id if self.on == "thread" else scene.reply_post_id
        assert (report.post_id, report.group_id) == (post_id, scene.group_id)
        assert report.origin_domain == urlsplit(scene.remote.base_url).netloc
        assert report.reporter_id is None and report.state == "open"
        assert report.comment == self.comment and report.category == "other"


@dataclass(frozen=True)
class GroupFetchedAgain:
    """Update{Group}: the group was fetched again from its server, not taken from the payload."""

    group_path: str

    async def check(self, scene: Scene, payload: dict[str, Any]) -> None:
        gets = scene.remote.gets(self.group_path)
        assert len(gets) >= 2, [r.path for r in scene.remote.received]


Effect = (
    Joined
    | Accepted
    | NewThread
    | NewReply
    | Helpful
    | Edited
    | Deleted
    | BannedThere
    | ActorFetchedAgain
    | OnlyPost
    | Reported
    | GroupFetchedAgain
)


# ---------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Applied:
    why: str
    effects: tuple[Effect, ...]


@dataclass(frozen=True)
class Refused:
    why: str
    status: int
    reason: str


@dataclass(frozen=True)
class Ignored:
    """202, and no effect. `stage`: dropped at the inbox (a type not handled), or stored and
    then done (nothing to do) or failed (refused during processing; `error` says why)."""

    why: str
    stage: str
    error: str = ""


Outcome = Applied | Refused | Ignored

# A plain ActivityStreams Follow of the group, for peers whose own Follow is not in their
# published fixtures or documentation: it is the harness's, not the peer's.
HARNESS_FOLLOW = "(harness Follow)"


@dataclass(frozen=True)
class Step:
    """One payload the peer sends, and what must come of it."""

    payload: str
    expect: Outcome
    inbox: str = "group"  # the group's inbox, the shared inbox, or the member's ("nurse")
    follows: str = ""  # first, the node's member follows the remote group of this fixture


@dataclass(frozen=True)
class Conversation:
    """A peer's payloads in the order that peer would send them to a group here."""

    peer: str
    actors: tuple[str, ...]  # the actor documents the peer publishes
    steps: tuple[Step, ...]
    documents: tuple[str, ...] = ()  # other documents it serves (objects named by IRI)


JOINED = (Joined(), Accepted())


def join(payload: str = HARNESS_FOLLOW) -> Step:
    return Step(payload, Applied("a Follow of a public group is accepted", JOINED))


CONVERSATIONS = [
    Conversation("lemmy", ("lemmy_person.json", "lemmy_group.json"), (
        join("lemmy_follow.json"),
        Step("lemmy_create_page.json", Applied(
            "a Page addressed to the group starts a thread; the markdown source is the text",
            (NewThread("test post", "test body", "<p>test body</p>"),))),
        Step("lemmy_create_comment.json", Applied(
            "a Note answering a thread here is a reply",
            (NewReply("{{remote}}/post/1", "hello"),))),
        Step("lemmy_like_note.json", Applied("an upvote (Like) marks the reply helpful",
             (Helpful("reply"),))),
        Step("lemmy_undo_like_note.json", Applied("Undo{Like} takes the mark back",
             (Helpful("reply", present=False),))),
        Step("lemmy_update_page.json", Applied("the author's Update edits title and text",
             (Edited(title="test post 1", text="test body"),))),
        Step("lemmy_dislike_page.json", Ignored(
            "Dislike (downvote) is not a type this node handles", "dropped")),
        Step("lemmy_lock_page.json", Ignored(
            "a Lock of our thread by someone who does not moderate the group here is refused",
            "failed", "Forbidden")),
        Step("lemmy_report_page.json", Applied(
            "a Flag of our thread is an open report in the group's queue, from the peer's domain",
            (Reported("thread", "report this post"),))),
        Step("lemmy_create_private_message.json", Ignored(
            "a private message to a member never becomes a post", "failed",
            "only public posts"), inbox="nurse"),
        Step("lemmy_delete_page.json", Applied("the author's Delete tombstones the thread",
             (Deleted(),))),
        Step("lemmy_undo_delete_page.json", Ignored(
            "restoring a deleted post is not supported: it stays deleted", "done")),
        Step("lemmy_delete_user.json", Applied(
            "Delete{actor}, signed by the person: an account deleted at home is erased here "
            "(posts tombstoned, memberships ended)", (Erased(),))),
        Step("lemmy_undo_follow.json", Applied("Undo{Follow} ends the membership",
             (Joined(active=False),))),
        Step("lemmy_update_community.json", Applied(
            "a moderator's Update{Group} of a group known here, on its server: the group is "
            "read again from itself (name, postingRestrictedToMods), never from the payload",
            (GroupFetchedAgain("/c/main"),)), inbox="shared", follows="lemmy_group.json"),
        Step("lemmy_announce_create_page.json", Ignored(
            "the fixture's Page names /u/main, not the announcing community, as audience",
            "failed", "belongs to another group"), inbox="shared"),
        Step("lemmy_block_user.json", Applied(
            "a community moderator's Block (target: the community) bans the member there",
            (BannedThere("/c/main"),)), inbox="nurse"),
        Step("lemmy_undo_block_user.json", Applied(
            "the moderator's Undo{Block} lifts the ban: the member may follow it again",
            (BannedThere("/c/main", banned=False),)), inbox="nurse"),
    )),
    Conversation("mastodon", ("mastodon_person.json",), (
        join("mastodon_follow.json"),
        Step("mastodon_create_note_in_group.json", Applied(
            "a Note mentioning the group (in cc) starts a thread titled by its first words",
            (NewThread("Test post to community @lemmy_community", "Test post to community",
                       "<p>Test post to community</p>"),))),
        Step("mastodon_create_note_reply.json", Applied(
            "a public reply to a post here is a reply",
            (NewReply("reply", "i have never been disappointed by a thinkpad"),))),
        Step("mastodon_like.json", Applied("a favourite marks the thread helpful",
             (Helpful("thread"),))),
        Step("mastodon_undo_like.json", Applied(
            "Undo{Like} takes the mark back (its embedded Like has another id)",
            (Helpful("thread", present=False),))),
        Step("mastodon_delete.json", Applied(
            "the author's Delete{Tombstone} tombstones the reply (its LD signature is unused)",
            (Deleted(),))),
        Step("mastodon_undo_follow.json", Applied("Undo{Follow} ends the membership",
             (Joined(active=False),))),
    )),
    Conversation("pleroma", ("pleroma_person.json",), (
        join("pleroma_follow.json"),
        Step("pleroma_create_note_reply.json", Applied(
            "a reply under the litepub context with @language is read through contentMap",
            (NewReply("thread", "test"),))),
        Step("pleroma_delete.json", Applied("Delete by object IRI tombstones the reply",
             (Deleted(),))),
    )),
    Conversation("friendica", ("friendica_person.json",), (
        join(),
        Step("friendica_create_note_reply.json", Applied(
            "a forum reply naming the group in to (no audience); its bbcode source is unused",
            (NewReply("thread", "test"),))),
        Step("friendica_like_page.json", Applied("a Like marks the thread helpful",
             (Helpful("thread"),))),
        Step("friendica_update_note.json", Applied("the author's Update edits the reply",
             (Edited(text="This is an edited comment."),))),
        Step("friendica_undo_dislike_page.json", Ignored(
            "Undo of a Dislike, which was never kept", "done")),
        Step("friendica_delete.json", Applied("the author's Delete{Tombstone}", (Deleted(),))),
    )),
    Conversation("mbin", ("mbin_person.json", "mbin_group.json"), (
        join("mbin_follow_magazine.json"),
        Step("mbin_create_entry.json", Applied(
            "a thread whose content is null is titled and written by its name; Mbin's summary "
            "is read as its content warning, as Mastodon reads it",
            (NewThread("test", "test", "<p>test</p>", warning="test #test"),))),
        Step("mbin_create_post.json", Applied(
            "a microblog Note to the magazine starts a thread titled by its text",
            (NewThread("test #test", "test", '<a href="'),))),
        Step("mbin_create_entry_comment.json", Applied("a comment on the thread is a reply",
             (NewReply("thread", "test"),))),
        Step("mbin_like_entry.json", Applied("a Like marks the thread helpful",
             (Helpful("thread"),))),
        Step("mbin_undo_like_entry.json", Applied("Undo{Like} takes the mark back",
             (Helpful("thread", present=False),))),
        Step("mbin_update_user.json", Applied(
            "Update{Person}: the actor is fetched again; the embedded copy is not trusted",
            (ActorFetchedAgain(),))),
        Step("mbin_flag_post.json", Applied(
            "a Flag with no comment (null) is an open report of the thread, with none",
            (Reported("thread", ""),))),
        Step("mbin_delete_post.json", Applied("the author's Delete{Tombstone}", (Deleted(),))),
        Step("mbin_undo_follow_magazine.json", Applied("Undo{Follow} ends the membership",
             (Joined(active=False),))),
        Step("mbin_announce_create_post.json", Applied(
            "a followed magazine's Announce{Create{Note}} starts a thread in that magazine",
            (NewThread("test #test", "test", remote_group="/m/test"),)),
             inbox="shared", follows="mbin_group.json"),
    )),
    Conversation("piefed", ("piefed_person.json",), (
        join(),
        Step("piefed_create_page.json", Applied("a discussion Page starts a thread",
             (NewThread("Example Discussion Post Title", "Example Discussion Post Body"),))),
        Step("piefed_create_question.json", Applied(
            "a poll (Question) starts a thread with its poll; its embedded replies are not kept",
            (NewThread("Poll Post Test", "this is the poll post body"), OnlyPost()))),
        Step("piefed_create_page_video.json", Applied(
            "a link post with no text: its text is the link, its title the post's name",
            (NewThread("Video post test 3", "https://files.catbox.moe/swf46b.mp4",
                       '<a href="https://files.catbox.moe/swf46b.mp4"'),))),
    )),
    Conversation("misskey", ("misskey_person.json",), (
        join("misskey_follow.json"),
        Step("misskey_create_note.json", Applied(
            "a Note with a CW mentioning the group starts a thread; the CW is kept",
            (NewThread(
                "@t1d@{{hospital_domain}} Anyone else get dawn phenomenon highs? What helped?",
                "dawn phenomenon", warning="blood sugar numbers"),))),
        Step("misskey_like.json", Applied(
            "an emoji reaction arrives as a Like: it marks the thread helpful",
            (Helpful("thread"),))),
        Step("misskey_undo_like.json", Applied("Undo{Like} takes the mark back",
             (Helpful("thread", present=False),))),
    )),
    Conversation("gotosocial", ("gotosocial_person.json",), (
        join(),
        Step("gotosocial_create_by_reference.json", Applied(
            "a Create naming its Note by IRI: the Note is fetched from its origin",
            (NewThread("This is an example note.", "This is an example note."),))),
        Step("gotosocial_create_poll_votes.json", Ignored(
            "poll votes (a Create of an array of Notes) are not posts", "failed", "no object"),
             inbox="nurse"),
        Step("gotosocial_delete_without_id.json", Refused(
            "the documented Delete example carries no id", 400, "id")),
    ), documents=("gotosocial_note.json",)),
    Conversation("peertube", ("peertube_person.json", "peertube_channel.json"), (
        join(),
        Step("peertube_create_comment.json", Applied(
            "a video comment answering the thread is a reply (markdown content read as text)",
            (NewReply("thread", "@af2@bae.st idk"),))),
        Step("peertube_announce_video.json", Ignored(
            "a channel's Announce of a Video: not a group anyone here follows", "done"),
             inbox="shared"),
    )),
    Conversation("nodebb", ("nodebb_person.json",), (
        join(),
        Step("nodebb_create_article.json", Applied(
            "a topic (Article) in the category starts a thread; its summary (an HTML "
            "excerpt) becomes the content warning, as text, as FEDERATION.md says",
            (NewThread("Welcome to your NodeBB!", "Welcome to your brand new NodeBB forum!",
                       "<h3>Welcome to your brand new NodeBB forum!</h3>",
                       warning="{{summary, cut to the content-warning limit}}"),))),
    )),
    Conversation("wordpress", ("wordpress_person.json", "wordpress_blog_actor.json"), (
        join(),
        Step("wordpress_create_comment.json", Applied(
            "a blog comment answering the thread is a reply",
            (NewReply("thread", "Nice! Hello from WordPress!"),))),
        Step("wordpress_announce_update.json", Ignored(
            "the blog actor's Announce{Update{Article}}: not a group anyone here follows",
            "done"), inbox="shared"),
    )),
    Conversation("fep-1b12", ("fep1b12_forum.json",), (
        Step("fep1b12_announce_example.json", Refused(
            "the FEP's Announce example has a scheme-less id (example.org/a/5)", 400, "id")),
    )),
]  # fmt: skip


def conversation_params() -> list[Any]:
    return [pytest.param(conversation, id=conversation.peer) for conversation in CONVERSATIONS]


# ---------------------------------------------------------------- playing a conversation


async def replay_applied(scene: Scene, document: dict[str, Any], inbox: str = "group") -> None:
    answer = await scene.send(document, inbox)
    assert answer.status == 202, answer
    assert await settled(scene, document["id"]) == "done", await inbox_item(scene, document["id"])


async def follow_remote_group(scene: Scene, group_iri: str) -> None:
    """The node's member joins a group on the peer, as the web form does."""
    node = scene.hospital.running.node
    directory = scene.hospital.running.federation.directory
    async with node.transaction() as session:
        group = await directory.remote_group(session, group_iri, node.clock.now())
        address = f"{group.slug}@{group.domain}"
        view = await groups.view_group(session, address, Viewer(scene.nurse_id))
        await membership.join(session, view, node.clock.now())


def harness_follow(scene: Scene, actor: str) -> dict[str, Any]:
    return {
        "@context": AS2,
        "id": f"{actor}/follows/{uuid.uuid4().hex}",
        "type": "Follow",
        "actor": actor,
        "object": scene.hospital.group_iri,
    }


def same_state(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Nothing changed, except that actors met while verifying may have been cached."""
    groups_kept = set(before["groups"]) <= set(after["groups"])
    others = [key for key in before if key != "groups"]
    return groups_kept and all(before[key] == after[key] for key in others)


async def play(scene: Scene, step: Step, payload: dict[str, Any]) -> None:
    before = await snapshot(scene)
    scene.actor_gets_before = len(scene.remote.gets(urlsplit(payload.get("actor", "")).path))
    answer = await scene.send(payload, step.inbox)
    expect = step.expect
    if isinstance(expect, Refused):
        assert answer.status == expect.status, answer
        assert expect.reason.lower() in answer.reason.lower(), answer
        if isinstance(payload.get("id"), str):
            assert await inbox_item(scene, payload["id"]) is None
        assert same_state(before, await snapshot(scene))
        return
    assert answer.status == 202, answer
    if isinstance(expect, Ignored):
        if expect.stage == "dropped":
            assert await inbox_item(scene, payload["id"]) is None, "an unhandled type was kept"
        else:
            assert await settled(scene, payload["id"]) == expect.stage
            item = await inbox_item(scene, payload["id"])
            assert item is not None and expect.error in item.error, item.error if item else None
        assert same_state(before, await snapshot(scene))
        return
    state = await settled(scene, payload["id"])
    item = await inbox_item(scene, payload["id"])
    assert state == "done", item.error if item else None
    for effect in expect.effects:
        await effect.check(scene, payload)


@pytest.mark.parametrize("conversation", conversation_params())
async def test_a_peer_conversation_has_the_stated_outcomes(
    hospital: Hospital, remote: FakeRemote, third: FakeRemote, conversation: Conversation
) -> None:
    # Given the node with a thread and a reply, and the peer publishing its actors
    scene = await make_scene(hospital, remote, third)
    for name in conversation.actors + conversation.documents:
        scene.serve(name)
    sender = scene.load(conversation.actors[0])["id"] if conversation.actors else ""
    for step in conversation.steps:
        if step.follows:
            await follow_remote_group(scene, scene.load(step.follows)["id"])
        if step.payload == HARNESS_FOLLOW:
            payload = harness_follow(scene, sender)
        else:
            payload = scene.load(step.payload)
        # When the peer delivers the payload, signed with its actor's key
        # Then the outcome is the one stated, for the reason given
        try:
            await play(scene, step, payload)
        except AssertionError as failure:
            raise AssertionError(f"{step.payload}: {step.expect.why}: {failure}") from failure
    # And whatever the payloads, the node is still whole
    await assert_node_is_healthy(scene)


# ---------------------------------------------------------------- fediverse-pasture inputs

PASTURE_INPUTS = [
    "necessary_properties",
    "public_addressing",
    "attributed_to",
    "context",
    "content_warnings",
    "language",
    "object_types",
    "in_reply_to",
    "html_bad",
    "html_tags",
    "html_tags_summary",
    "html_anchor",
    "url",
    "mentions",
    "hashtags",
    "quotes",
]
PASTURE_ONE_ACTOR = "http://pasture-one-actor"


def pasture_create(scene: Scene, actor: str, example: dict[str, Any]) -> dict[str, Any]:
    """The Create the fediverse pasture sends to an actor (here: the group): its Note skeleton
    addressed to Public, the example's properties over it, the recipient appended to `to`."""
    note_id = f"{actor}/pasture/{uuid.uuid4().hex}"
    note: dict[str, Any] = {
        "type": "Note",
        "attributedTo": actor,
        "to": [PUBLIC],
        "id": note_id,
        "published": "2024-01-06T13:11:45Z",
        "content": "text",
        **example,
    }
    note = {key: value for key, value in note.items() if value is not None}  # null: "without"
    to = note.get("to", [])
    note["to"] = (to if isinstance(to, list) else [to]) + [scene.hospital.group_iri]
    text = json.dumps(note)
    for old, new in [
        (PASTURE_ONE_ACTOR + "/actor", actor),
        (PASTURE_ONE_ACTOR + "/assets/note1.jsonap", scene.thread_iri),
        (PASTURE_ONE_ACTOR + "/assets/note2.jsonap", scene.reply_iri),
        (PASTURE_ONE_ACTOR, scene.third.base_url),
    ]:
        text = text.replace(old, new)
    note = json.loads(text)
    create: dict[str, Any] = {
        "@context": [AS2, {"Hashtag": "as:Hashtag", "sensitive": "as:sensitive"}],
        "type": "Create",
        "actor": actor,
        "to": note["to"],
        "published": "2024-01-06T13:11:45Z",
        "object": note,
        "id": note_id + "/activity",
    }
    if "@context" in example:  # the pasture then puts the note's context on the Create
        del create["@context"]
        if "@context" in note:
            create["@context"] = note.pop("@context")
    return create


@dataclass
class PastureResult:
    example: dict[str, Any]
    create: dict[str, Any]
    status: int
    state: str = ""
    error: str = ""
    stored: Post | None = None


PastureCheck = Callable[[PastureResult], None]


def kept(result: PastureResult) -> None:
    assert result.state == "done" and result.stored is not None, result


def not_kept(reason: str) -> PastureCheck:
    def check(result: PastureResult) -> None:
        assert result.stored is None, result
        assert reason.lower() in result.error.lower(), result

    return check


def warning_is(expected: str) -> PastureCheck:
    def check(result: PastureResult) -> None:
        kept(result)
        assert result.stored is not None and result.stored.content_warning == expected

    return check


def waits(result: PastureResult) -> None:
    """A reply to a post that is not here is kept for a later retry, not dropped."""
    assert result.state == "waits" and result.stored is None, result


UNSUPPORTED = not_kept("unsupported object type")

# Where the documentation says what happens: input -> example index -> check.
PASTURE_EXPECTATIONS: dict[str, dict[int, PastureCheck]] = {
    "necessary_properties": {
        0: kept,
        1: not_kept("no object"),  # without id: the object cannot be named
        2: kept,  # without published: not needed
        3: not_kept("attributedTo"),  # without attributedTo: no author
        4: not_kept("type"),
    },
    # Public spelled in full, as as:Public, and as Public: all three are public
    "public_addressing": {0: kept, 1: kept, 2: kept},
    # The content warning is `summary`; `sensitive` alone still gets a warning of our own
    "content_warnings": {
        0: warning_is("Marked sensitive by its author"),
        1: warning_is("summary"),
        2: warning_is("summary"),
    },
    # Article, Note and Page are posts (Question too); other object types are not
    "object_types": {
        0: kept, 1: UNSUPPORTED, 2: UNSUPPORTED, 3: UNSUPPORTED, 4: UNSUPPORTED, 5: kept,
        6: kept, 7: UNSUPPORTED, 8: UNSUPPORTED, 9: UNSUPPORTED, 10: UNSUPPORTED,
        11: UNSUPPORTED, 12: kept, 13: not_kept("type"),
    },
    # No @context at all is ActivityStreams (AS2 section 4.1)
    "context": {0: kept, 1: kept, 2: kept, 4: kept},
    # A reply to something that is not here waits for it; two parents are refused
    "in_reply_to": {1: waits, 4: not_kept("inReplyTo")},
}  # fmt: skip


async def test_fediverse_pasture_inputs_never_break_the_node(
    hospital: Hospital, remote: FakeRemote, third: FakeRemote
) -> None:
    # Given a member of the group on the peer (the pasture's actor shape: a plain Person)
    scene = await make_scene(hospital, remote, third)
    actor = remote.actor("mallory")
    scene.key_ids[actor] = remote.key_id("mallory")
    await replay_applied(scene, harness_follow(scene, actor))

    # When every example of the chosen inputs arrives as the pasture sends it, to the group
    results: dict[str, list[PastureResult]] = {}
    for name in PASTURE_INPUTS:
        for example in fediverse_pasture_inputs.available[name].examples:
            create = pasture_create(scene, actor, example)
            answer = await scene.send(create)
            results.setdefault(name, []).append(PastureResult(example, create, answer.status))

    # Then each is accepted (202) or refused as malformed (400), never worse
    for name, outcomes in results.items():
        for result in outcomes:
            assert result.status in (202, 400), (name, result)
            if result.status != 202:
                continue
            result.state = await settled(scene, result.create["id"])
            item = await inbox_item(scene, result.create["id"])
            result.error = item.error if item else ""
            note_id = result.create["object"].get("id")
            found = await post_by_ap_id(scene, note_id) if isinstance(note_id, str) else None
            result.stored = found[0] if found else None
        # And where the documentation says what happens, it happens
        for index, check in PASTURE_EXPECTATIONS.get(name, {}).items():
            check(outcomes[index])
    # And whatever was kept is plain HTML and shown escaped, and the node is whole
    await assert_node_is_healthy(scene)
