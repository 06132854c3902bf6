"""What we publish and send, checked against what Lemmy, Mbin and Mastodon require of it.

Everything is read from a real node over HTTP, or captured at a FakeRemote follower as the node
delivers it; nothing here builds our documents. Each requirement cites the peer's source (read
through the code search; Lemmy and Mbin at their newest snapshot, Mastodon at its stored one):

- Lemmy: crates/apub/objects/src/protocol/{group,page,note}.rs (what deserialises),
  crates/apub/activities/src/protocol/{community/announce,create_or_update/page,
  following/accept}.rs, crates/apub/activities/src/community/announce.rs (the Announce's actor
  must be the community of its object; visibility), crates/apub/apub/src/protocol/collections/
  group_{followers,moderators,featured,outbox}.rs, crates/routes/src/nodeinfo.rs and
  utils/scheduled_tasks.rs (NodeInfo as Lemmy reads it); its federation library
  LemmyNet/activitypub-federation-rust: src/fetch/mod.rs (accepted Content-Types, id = URL),
  src/fetch/webfinger.rs, src/http_signatures.rs (a Digest is required).
- Mbin: src/Service/ActivityPubManager.php (updateMagazine, handleModeratorCollection,
  getReceivers), src/Service/ActivityPub/{Page,Note,ApObjectExtractor,SignatureValidator}.php,
  src/Service/ActivityPub/Webfinger/WebFinger.php, src/MessageHandler/ActivityPub/Inbox/
  ActivityHandler.php (unwrapping Announce{Create}).
- Mastodon: app/helpers/jsonld_helper.rb (Accept sent, Content-Type accepted, id = URL),
  app/controllers/concerns/signature_verification.rb (signed date and digest), app/lib/
  activitypub/activity.rb (Page is a "converted" type: title, summary, link), app/lib/
  webfinger.rb (the self link), app/serializers/activitypub/note_serializer.rb.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import select

from node import groups, posts
from node.policy import Viewer
from node.storage.models import Member
from tests.federation_harness import eventually
from tests.peers import PUBLIC, FakeRemote, Hospital, Received, b64, join

ACTIVITY_JSON = "application/activity+json"
AS2_PROFILE = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'

# The Accept header each peer sends when it fetches an actor or an object.
PEER_ACCEPTS = {
    # activitypub-federation-rust src/fetch/mod.rs (FEDERATION_CONTENT_TYPE), and Mbin
    # src/Service/ActivityPub/ApHttpClient.php (getFetchAcceptHeaders): the same value.
    "lemmy-and-mbin": ACTIVITY_JSON,
    # Mastodon app/helpers/jsonld_helper.rb, build_request.
    "mastodon": "application/activity+json, application/ld+json",
    # ActivityPub section 3.2: what a client MUST send.
    "activitypub": AS2_PROFILE,
}
# activitypub-federation-rust src/fetch/mod.rs: a fetched document must have one of these
# Content-Types (compared lower-cased), or Lemmy refuses it.
LEMMY_CONTENT_TYPES = (ACTIVITY_JSON, AS2_PROFILE, "application/activity+json; charset=utf-8")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


# ---------------------------------------------------------------- reading what is served


@dataclass
class Served:
    status: int
    content_type: str
    vary: str
    body: str
    document: Any


async def fetch(url: str, accept: str = ACTIVITY_JSON) -> Served:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Accept": accept}, allow_redirects=False) as response,
    ):
        body = await response.text()
        document = None
        if body.startswith(("{", "[")):
            document = await response.json(content_type=None)
        return Served(
            response.status,
            response.headers.get("Content-Type", ""),
            response.headers.get("Vary", ""),
            body,
            document,
        )


async def as2(url: str, accept: str = ACTIVITY_JSON) -> dict[str, Any]:
    """A document as a peer gets it: 200, an AS2 Content-Type, and the id it was asked for."""
    served = await fetch(url, accept)
    assert served.status == 200, (url, served.status, served.body[:300])
    assert served.content_type.lower() in LEMMY_CONTENT_TYPES, served.content_type
    assert isinstance(served.document, dict), served.body[:300]
    # Lemmy (FetchWrongId) and Mastodon (fetch_resource: json['id'] == uri) both refuse a
    # document whose id is not the URL it was fetched from.
    assert served.document["id"] == url, (served.document["id"], url)
    return served.document


def is_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def is_time(value: Any) -> bool:
    return isinstance(value, str) and bool(RFC3339.match(value))


def url_list(value: Any) -> list[str]:
    """One-or-many URLs, as Lemmy's deserialize_one_or_many reads them: all must be URLs."""
    items = value if isinstance(value, list) else [value]
    assert all(is_url(item) for item in items), value
    return items


def host(iri: str) -> str:
    return urlsplit(iri).netloc


# ---------------------------------------------------------------- what each peer requires


def check_lemmy_page(page: dict[str, Any], group_iri: str) -> None:
    """crates/apub/objects/src/protocol/page.rs, and ApubPost::verify and InCommunity."""
    assert page["type"] in ("Page", "Article", "Note", "Video", "Event")
    assert is_url(page["id"]) and is_url(page["attributedTo"])
    assert "inReplyTo" not in page  # deserialize_not_present: a post must not have one
    assert page.get("mediaType") in (None, "text/html", "text/markdown")
    source = page.get("source")
    assert source is None or source.get("mediaType") == "text/markdown"
    assert page.get("name") or page.get("content")
    assert is_time(page["published"])
    # InCommunity: the first of to/cc that is not Public must be the community, and
    # `audience`, when present, must be that same community.
    recipients = [
        iri for iri in url_list(page.get("to", [])) + url_list(page.get("cc", [])) if iri != PUBLIC
    ]
    assert recipients and recipients[0] == group_iri, recipients
    assert page.get("audience", group_iri) == group_iri
    # verify_visibility: a public community's post is addressed to Public.
    assert PUBLIC in url_list(page["to"]) + url_list(page.get("cc", []))
    # verify_domains_match(creator, id): the author is on the post's server.
    assert host(page["attributedTo"]) == host(page["id"])


def check_lemmy_note(note: dict[str, Any]) -> None:
    """crates/apub/objects/src/protocol/note.rs: `to`, `content` and `inReplyTo` required."""
    assert note["type"] == "Note"
    assert is_url(note["id"]) and is_url(note["attributedTo"])
    assert url_list(note["to"])
    assert isinstance(note["content"], str) and note["content"]
    assert is_url(note["inReplyTo"])
    assert note.get("mediaType") in (None, "text/html", "text/markdown")
    assert is_time(note["published"])


def check_mbin_post(document: dict[str, Any], group_iri: str) -> None:
    """src/Service/ActivityPub/Page.php and Note.php read these keys unguarded, and
    getReceivers (ActivityPubManager.php) finds the magazine in audience, to and cc."""
    for key in ("id", "attributedTo", "to", "cc", "published"):
        assert key in document, key
    assert isinstance(document["attributedTo"], str)
    if document["type"] == "Page":
        assert isinstance(document["name"], str) and document["name"]
    receivers = [document.get("audience"), *url_list(document["to"])]
    receivers += url_list(document["cc"]) if document["cc"] else []
    assert group_iri in receivers
    # ApObjectExtractor::getMarkdownBody takes a text/markdown source first.
    assert document["source"]["mediaType"] == "text/markdown"


def check_mastodon_status(document: dict[str, Any]) -> None:
    """What Mastodon shows: a Note's content; a Page (a converted type, app/lib/activitypub/
    activity.rb) as its name, summary and a link to its url. Public if Public is in `to`."""
    assert is_url(document["attributedTo"]) and is_time(document["published"])
    assert is_url(document["url"])
    assert PUBLIC in url_list(document["to"])
    if document["type"] == "Page":
        assert document["name"]
    else:
        assert document["content"]
    # note_serializer.rb: a content warning is `summary`, with `sensitive` true.
    if document.get("summary"):
        assert document["sensitive"] is True


# ---------------------------------------------------------------- signatures of deliveries


def verify_delivery(request: Received, public_key: rsa.RSAPublicKey) -> dict[str, str]:
    """A delivery's draft-cavage signature, checked as the three peers check it."""
    params = dict(re.findall(r'(\w+)="([^"]*)"', request.headers["signature"]))
    covered = params["headers"].split()
    # Mastodon signature_verification.rb (verify_signature_strength!): on a POST the date and
    # the digest must be signed; Lemmy's verifier is configured with require_digest().
    assert {"(request-target)", "host", "date", "digest"} <= set(covered), covered
    assert params.get("algorithm", "hs2019") in ("rsa-sha256", "hs2019")
    # Mastodon reads only SHA-256 from Digest; Lemmy (verify_body_hash) and Mbin compare it.
    assert request.headers["digest"] == "SHA-256=" + b64(hashlib.sha256(request.body).digest())
    assert parsedate_to_datetime(request.headers["date"]).tzinfo is not None
    lines = [
        f"{name}: post {request.path}" if name == "(request-target)" else
        f"{name}: {request.headers[name]}"
        for name in covered
    ]  # fmt: skip
    public_key.verify(
        base64.b64decode(params["signature"]),
        "\n".join(lines).encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    return params


async def published_key(actor_iri: str) -> rsa.RSAPublicKey:
    actor = await as2(actor_iri)
    key = serialization.load_pem_public_key(actor["publicKey"]["publicKeyPem"].encode())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def delivery_of(follower: FakeRemote, activity_id: str) -> Received:
    return next(
        request
        for request in follower.received
        if request.method == "POST" and request.json().get("id") == activity_id
    )


# ---------------------------------------------------------------- the published scene


@dataclass
class Published:
    hospital: Hospital
    follower: FakeRemote
    thread_id: str
    page_iri: str
    reply_iri: str

    @property
    def group_iri(self) -> str:
        return self.hospital.group_iri


async def announces_at(follower: FakeRemote, at_least: int) -> list[dict[str, Any]] | None:
    found = follower.posted("Announce")
    return found if len(found) >= at_least else None


@pytest.fixture
async def published(hospital: Hospital, remote: FakeRemote) -> AsyncIterator[Published]:
    """mallory (on the fake server) follows the group; nurse opens a thread in it and
    replies to it with a content warning. The node delivers all of it to mallory."""
    await join(hospital, remote)
    node = hospital.running.node
    async with node.transaction() as session:
        nurse = (
            await session.execute(select(Member).where(Member.username == "nurse"))
        ).scalar_one()
        view = await groups.view_group(session, "t1d", Viewer(nurse.id))
        thread = await posts.start_thread(
            session, node.settings.limits, view, title="Pump or pens?",
            draft=posts.Draft("Which do you use, and **why**?"), now=node.clock.now(),
        )  # fmt: skip
    async with node.transaction() as session:
        reply = await posts.reply(
            session, node.settings.limits, Viewer(nurse.id), thread_id=thread.id,
            parent_id=None, draft=posts.Draft("Pens, after a pump failed at night.",
            content_warning="pump failure"), now=node.clock.now(),
        )  # fmt: skip
    # Announce{Create{Page}}, Announce{Page} and Announce{Create{Note}}
    await eventually(lambda: announces_at(remote, 3), "three Announces at mallory")
    base = hospital.base_url
    yield Published(hospital, remote, thread.id, f"{base}/t/{thread.id}", f"{base}/p/{reply.id}")


# ---------------------------------------------------------------- content negotiation


@pytest.mark.parametrize("accept", PEER_ACCEPTS.values(), ids=PEER_ACCEPTS.keys())
async def test_every_document_answers_the_accept_header_each_peer_sends(
    published: Published, accept: str
) -> None:
    # Given the group, its owner, a thread and a reply, published on the node
    base = published.hospital.base_url
    urls = [published.group_iri, f"{base}/u/nurse", published.page_iri, published.reply_iri]
    for url in urls:
        # When a peer fetches each with its own Accept header
        served = await fetch(url, accept)
        # Then it gets AS2 it accepts, the id it asked for, and a cache told to vary on Accept
        assert served.status == 200, (url, served.status)
        assert served.content_type.lower() in LEMMY_CONTENT_TYPES, served.content_type
        assert served.document["id"] == url
        assert "accept" in served.vary.lower()
    # And a browser asking for HTML gets the page, not JSON
    browser = await fetch(published.group_iri, "text/html,application/xhtml+xml")
    assert browser.status == 200 and browser.content_type.startswith("text/html")


# ---------------------------------------------------------------- the Group actor


async def test_the_group_actor_has_what_lemmy_mbin_and_mastodon_read(published: Published) -> None:
    group = await as2(published.group_iri)
    # Lemmy, protocol/group.rs: the fields that must deserialise
    assert group["type"] == "Group"
    assert group["preferredUsername"] == "t1d"
    for field in ("inbox", "outbox", "followers", "featured", "attributedTo"):
        assert is_url(group[field]), field
    assert is_url(group["endpoints"]["sharedInbox"])
    key = group["publicKey"]
    assert key["owner"] == group["id"] and key["id"] == group["id"] + "#main-key"
    assert isinstance(await published_key(group["id"]), rsa.RSAPublicKey)
    assert group["postingRestrictedToMods"] is False
    assert is_time(group["published"])
    # ... where manuallyApprovesFollowers true would mean a private community
    assert group["manuallyApprovesFollowers"] is False
    # Mbin, updateMagazine: reads `name` unguarded, and a string attributedTo as a collection
    assert isinstance(group["name"], str) and group["name"] == "Type 1 diabetes"
    assert isinstance(group["attributedTo"], str)
    # Mastodon, actor_serializer.rb's reader: a profile URL and booleans it shows
    assert is_url(group["url"])
    assert group["discoverable"] is True


async def test_the_group_collections_have_the_shapes_lemmy_and_mbin_parse(
    published: Published,
) -> None:
    group = await as2(published.group_iri)
    # Lemmy GroupFollowers: a Collection with an integer totalItems and an (empty) items;
    # Mbin updateMagazine keeps totalItems only when it is an integer
    followers = await as2(group["followers"])
    assert followers["type"] == "Collection"
    assert followers["totalItems"] == 2 and followers["items"] == []
    # Lemmy GroupModerators: an OrderedCollection of person IRIs; Mbin handleModeratorCollection
    # reads items or orderedItems
    moderators = await as2(group["attributedTo"])
    assert moderators["type"] == "OrderedCollection"
    assert moderators["orderedItems"] == [f"{published.hospital.base_url}/u/nurse"]
    # Lemmy GroupFeatured: an OrderedCollection of Pages, with totalItems
    featured = await as2(group["featured"])
    assert featured["type"] == "OrderedCollection"
    assert featured["totalItems"] == 0 and featured["orderedItems"] == []
    # Lemmy GroupOutbox: an OrderedCollection with totalItems and inline orderedItems
    outbox = await as2(group["outbox"])
    assert outbox["type"] == "OrderedCollection"
    # The thread's Announce{Create{Page}} and the reply's Announce{Create{Note}}; the bare
    # Announce{Page} boost sent for Mastodon is not listed (Lemmy could not read it).
    assert outbox["totalItems"] == 2 and len(outbox["orderedItems"]) == 2
    assert isinstance(outbox["orderedItems"], list) and outbox["orderedItems"]


async def test_every_outbox_item_deserialises_as_a_lemmy_announce(published: Published) -> None:
    outbox = await as2(published.group_iri + "/outbox")
    for item in outbox["orderedItems"]:
        # protocol/community/announce.rs: actor, to, cc, type, id; the object is an IRI or an
        # object with both `id` and `actor` (RawAnnouncableActivities). One item that is
        # neither fails the whole Vec, so Lemmy backfills nothing from the outbox.
        assert item["type"] == "Announce" and item["actor"] == published.group_iri
        assert url_list(item["to"]) and isinstance(item["cc"], list | str)
        inner = item["object"]
        assert is_url(inner) or (is_url(inner.get("id")) and is_url(inner.get("actor"))), inner


# ---------------------------------------------------------------- posts


async def test_the_page_is_one_lemmy_mbin_and_mastodon_can_read(published: Published) -> None:
    page = await as2(published.page_iri)
    assert page["type"] == "Page" and page["name"] == "Pump or pens?"
    check_lemmy_page(page, published.group_iri)
    check_mbin_post(page, published.group_iri)
    check_mastodon_status(page)
    assert page["url"] == published.page_iri
    # Lemmy InCommunity dereferences the group it names: it must be a Group document
    assert (await as2(published.group_iri))["type"] == "Group"


async def test_the_reply_is_a_note_lemmy_mbin_and_mastodon_can_read(published: Published) -> None:
    note = await as2(published.reply_iri)
    check_lemmy_note(note)
    check_mbin_post(note, published.group_iri)
    check_mastodon_status(note)
    # It answers the thread's Page, and carries its content warning as Mastodon does
    assert note["inReplyTo"] == published.page_iri
    assert note["summary"] == "pump failure" and note["sensitive"] is True
    assert note["audience"] == published.group_iri


# ---------------------------------------------------------------- deliveries


async def test_the_announced_create_page_is_one_lemmy_and_mbin_accept(published: Published) -> None:
    hospital, follower = published.hospital, published.follower
    announce = next(
        a
        for a in follower.posted("Announce")
        if isinstance(a["object"], dict) and a["object"].get("type") == "Create"
        and a["object"]["object"]["type"] == "Page"
    )  # fmt: skip
    create, page = announce["object"], announce["object"]["object"]
    # Lemmy community/announce.rs: the Announce's actor is the community of what it wraps,
    # and it is public (verify_visibility); its cc names the followers collection
    assert announce["actor"] == published.group_iri
    assert PUBLIC in url_list(announce["to"]) + url_list(announce["cc"])
    assert published.group_iri + "/followers" in url_list(announce["cc"])
    # Lemmy CreateOrUpdatePage: actor, to, cc, object Page, audience = the community; the
    # object is on the actor's server and attributed to the actor
    assert create["actor"] == page["attributedTo"] == f"{hospital.base_url}/u/nurse"
    assert host(create["id"]) == host(create["actor"]) == host(page["id"])
    assert PUBLIC in url_list(create["to"]) + url_list(create["cc"])
    assert create["audience"] == published.group_iri
    check_lemmy_page(page, published.group_iri)
    # Mbin ActivityHandler: an Announce with an object array is unwrapped; the inner actor
    # is a person it can fetch, and the Create's object is handled as an entry
    assert (await as2(create["actor"]))["type"] == "Person"
    check_mbin_post(page, published.group_iri)
    # Lemmy's IdOrNestedObject may fetch the wrapped activity by its id: it is served there
    served_create = await as2(create["id"])
    assert {k: v for k, v in served_create.items() if k != "@context"} == create
    # The embedded Page is what the Page's own IRI serves (Lemmy and Mbin may refetch it)
    served = await as2(page["id"])
    assert {k: v for k, v in served.items() if k != "@context"} == page
    # The request is signed by the group's key, as all three verify, and Mbin's
    # SignatureValidator finds the keyId, the id and the actor on one host
    params = verify_delivery(
        delivery_of(follower, announce["id"]), await published_key(published.group_iri)
    )
    assert params["keyId"] == published.group_iri + "#main-key"
    assert host(params["keyId"]) == host(announce["id"]) == host(announce["actor"])


async def test_the_announced_reply_is_one_lemmy_reads(published: Published) -> None:
    announce = next(
        a
        for a in published.follower.posted("Announce")
        if isinstance(a["object"], dict) and a["object"].get("type") == "Create"
        and a["object"]["object"]["type"] == "Note"
    )  # fmt: skip
    create, note = announce["object"], announce["object"]["object"]
    assert announce["actor"] == published.group_iri
    # Lemmy CreateOrUpdateNote: actor, to, cc, the Note; the Note's community is found
    # through its inReplyTo, which must be the Page Lemmy already holds
    assert create["actor"] == note["attributedTo"]
    assert url_list(create["to"]) and isinstance(create["cc"], list | str)
    check_lemmy_note(note)
    assert note["inReplyTo"] == published.page_iri
    check_mastodon_status(note)
    verify_delivery(
        delivery_of(published.follower, announce["id"]), await published_key(published.group_iri)
    )


async def test_the_boost_of_the_page_is_one_mastodon_shows(published: Published) -> None:
    # Mastodon cannot unwrap Announce{Create}; the group also boosts the bare Page
    boost = next(
        a
        for a in published.follower.posted("Announce")
        if isinstance(a["object"], dict) and a["object"].get("type") == "Page"
    )
    page = boost["object"]
    # activity/announce.rb: a public boost (Public in to) by the group; the embedded object is
    # used as is only when its id and its author are on the announcer's host
    assert boost["actor"] == published.group_iri and PUBLIC in url_list(boost["to"])
    assert host(page["id"]) == host(page["attributedTo"]) == host(boost["actor"])
    check_mastodon_status(page)
    assert page["id"] == published.page_iri


async def test_the_accept_of_a_follow_is_one_lemmy_and_mastodon_match(
    published: Published,
) -> None:
    accept = published.follower.posted("Accept")[0]
    follow = accept["object"]
    # Lemmy following/accept.rs: actor is the community, object the Follow (id or embedded),
    # `to` (optional) one recipient; Mastodon matches the Follow by its id and actors
    assert accept["actor"] == published.group_iri
    assert follow["type"] == "Follow"
    assert follow["actor"] == published.follower.actor("mallory")
    assert follow["object"] == published.group_iri
    assert url_list(accept["to"]) == [published.follower.actor("mallory")]
    verify_delivery(
        delivery_of(published.follower, accept["id"]), await published_key(published.group_iri)
    )


# ---------------------------------------------------------------- discovery


async def webfinger(hospital: Hospital, resource: str, accept: str) -> Served:
    query = quote(resource, safe=":@")
    return await fetch(f"{hospital.base_url}/.well-known/webfinger?resource={query}", accept)


@pytest.mark.parametrize(
    ("username", "path", "kind"),
    [("t1d", "/g/t1d", "Group"), ("nurse", "/u/nurse", "Person")],
    ids=["group", "person"],
)
async def test_webfinger_as_mastodon_lemmy_and_mbin_resolve_it(
    published: Published, username: str, path: str, kind: str
) -> None:
    hospital = published.hospital
    acct = f"acct:{username}@{hospital.running.domain}"
    # Mastodon app/lib/webfinger.rb asks with this Accept; Lemmy with application/jrd+json
    for accept in ("application/jrd+json, application/json", "application/jrd+json"):
        served = await webfinger(hospital, acct, accept)
        assert served.status == 200, served.body
        assert served.content_type.startswith("application/jrd+json")
        jrd = served.document
        # Mastodon and Lemmy (debug_assert) compare the subject with what they asked for
        assert jrd["subject"] == acct
        # Lemmy deserialises aliases as URLs, properties and link properties as URL keys
        assert all(is_url(alias) for alias in jrd.get("aliases", []))
        assert all(is_url(name) for name in jrd.get("properties", {}))
        for link in jrd["links"]:
            assert isinstance(link["rel"], str)
            assert "href" not in link or is_url(link["href"])
            assert all(is_url(name) for name in link.get("properties", {}))
        # Mbin WebFinger::getProfileId: rel self with exactly application/activity+json
        selves = [
            link["href"]
            for link in jrd["links"]
            if link["rel"] == "self" and link.get("type") == ACTIVITY_JSON
        ]
        assert selves == [hospital.base_url + path]
        # Lemmy webfinger_resolve_actor dereferences every link typed application/*; each
        # must be the actor (Mastodon's round trip: the self href is the actor id)
        for link in jrd["links"]:
            if link.get("type", "").startswith("application/"):
                actor = await as2(link["href"])
                assert actor["type"] == kind
                assert f"acct:{actor['preferredUsername']}@{host(actor['id'])}" == acct


async def test_nodeinfo_as_lemmy_reads_it(published: Published) -> None:
    base = published.hospital.base_url
    discovery = await fetch(base + "/.well-known/nodeinfo", "application/json")
    assert discovery.status == 200
    # Lemmy NodeInfoWellKnownLinks: every link has a URL rel and a URL href, or the whole
    # document fails to deserialise
    links = discovery.document["links"]
    assert links and all(is_url(link["rel"]) and is_url(link["href"]) for link in links)
    # scheduled_tasks.rs takes the first rel starting with the 2.x schema
    chosen = next(
        link
        for link in links
        if link["rel"].startswith("http://nodeinfo.diaspora.software/ns/schema/2.")
    )
    served = await fetch(chosen["href"], "application/json")
    assert served.status == 200
    info = served.document
    # NodeInfo 2.1 schema: required fields, software.name in [a-z0-9-]
    assert info["version"] == "2.1"
    assert re.fullmatch(r"[a-z0-9-]+", info["software"]["name"])
    assert isinstance(info["software"]["version"], str)
    assert "activitypub" in info["protocols"]
    assert isinstance(info["services"]["inbound"], list)
    assert isinstance(info["services"]["outbound"], list)
    assert isinstance(info["openRegistrations"], bool)
    # Lemmy NodeInfoUsage: i32 counts; metadata a map of strings (anything else fails it)
    users = info["usage"]["users"]
    assert all(isinstance(users[k], int) for k in ("total", "activeHalfyear", "activeMonth"))
    assert users["total"] == 1  # nurse; mallory is not an account here
    assert info["usage"]["localPosts"] == 2
    assert all(isinstance(value, str) for value in info["metadata"].values())
