"""A member's data export: the archive's shape over HTTP, who may download it, its memory
as it streams 10,000 posts, and `healthnode member export` for a request made in writing."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sqlite3
import stat
import tracemalloc
import zipfile
from contextlib import closing
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from federation.convert import Documents
from federation.jsonld import PUBLIC
from node import export, members
from node.config import Settings
from node.ids import new_object_id
from node.reports import ReportCategory, file_report
from node.runtime import NodeContext
from node.storage.models import Member, OutboxActivity, Post
from tests.browser import Browser
from tests.conftest import CHEAP_PASSWORDS
from tests.test_cli import DATABASE_FILE, healthnode
from tests.test_domain_services import (
    add_group,
    add_member,
    add_reply,
    do_join,
    marking,
    new_thread,
    opening_post,
    run,
)

EXPORT = "/account/export"
OTHERS_WORDS = "olivia writes about her own readings"


async def download(browser: Browser) -> tuple[int, dict[str, str], bytes]:
    """POST the export form as its page would; the status, headers and body, unfollowed."""
    await browser.get(EXPORT)
    data = {"csrf_token": browser.token}
    async with browser.client.post(EXPORT, data=data, allow_redirects=False) as response:
        return response.status, dict(response.headers), await response.read()


def files_of(archive: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        assert opened.testzip() is None
        return {name: json.loads(opened.read(name)) for name in opened.namelist()}


async def member_named(node: NodeContext, username: str) -> Member:
    async with node.transaction() as session:
        return await members.get_member(session, username)


async def test_the_archive_holds_the_members_own_data_and_their_activities(
    web_node: NodeContext, browser: Browser
) -> None:
    # Given max, registered with consent, in olivia's public group and owning a private one
    node = web_node
    await browser.register("max")
    max_ = await member_named(node, "max")
    olivia = await add_member(node, "olivia")
    sugar = await add_group(node, olivia, "sugar")
    quiet = await add_group(node, max_, "quiet", private=True, join_policy="request")
    await do_join(node, "sugar", max_)
    # ...who replied to olivia's thread, started one there and one in his private group,
    # marked her post helpful and reported it
    olivias = await new_thread(node, "sugar", olivia, "Morning readings", OTHERS_WORDS)
    olivias_post = await opening_post(node, olivias)
    await add_reply(node, olivias, max_, "Mine were high too", olivias_post.id)
    public_thread = await new_thread(node, "sugar", max_, "Evening walks", "Walking helps me")
    await new_thread(node, quiet.slug, max_, "Private worries", "Only for this room")
    await run(node, marking(node, max_, olivias_post))
    async with node.transaction() as session:
        await file_report(
            session, category=ReportCategory.SPAM, now=node.clock.now(), group_id=sugar.id,
            post_id=olivias_post.id, reporter_id=max_.id, comment="looks like an advert",
        )  # fmt: skip

    # When max downloads his data
    status, headers, body = await download(browser)

    # Then it is a zip attachment no cache keeps, with one JSON file per kind of data
    assert status == 200
    assert headers["Content-Type"] == "application/zip"
    assert headers["Content-Disposition"].startswith('attachment; filename="healthnode-max-')
    assert headers["Cache-Control"] == "no-store"
    files = files_of(body)
    assert sorted(files) == sorted(export.FILE_NAMES)
    documents = Documents(node.settings)
    max_iri = documents.member_iri(max_)
    assert files["profile.json"]["username"] == "max"
    assert files["profile.json"]["actor"] == max_iri
    assert "password_hash" not in json.dumps(files["profile.json"])
    [consent] = files["consents.json"]
    assert consent["policy_version"].startswith(node.settings.consent_policy_version + "+")
    assert "federates" in consent["text"] or "servers" in consent["text"]
    assert consent["given_at"]
    memberships = {item["group"]["slug"]: item for item in files["memberships.json"]}
    assert memberships["sugar"]["role"] == "member"
    assert memberships[quiet.slug]["role"] == "owner"
    assert memberships[quiet.slug]["group"]["visibility"] == "private"

    # Posts carry their group and thread title; the reply names what it answers by IRI only
    posts = {post["text"]: post for post in files["posts.json"]}
    assert set(posts) == {"Mine were high too", "Walking helps me", "Only for this room"}
    reply = posts["Mine were high too"]
    assert reply["thread"]["title"] == "Morning readings"
    assert reply["group"]["slug"] == "sugar"
    assert reply["in_reply_to"] == documents.thread_iri(olivias)
    assert not reply["opens_thread"]
    assert posts["Only for this room"]["group"]["visibility"] == "private"
    assert OTHERS_WORDS not in body.decode("latin-1")  # no other member's text, anywhere
    assert not any(OTHERS_WORDS in json.dumps(content) for content in files.values())

    [mark] = files["helpful_marks.json"]
    assert mark["post"] == documents.thread_iri(olivias)
    assert mark["thread"]["title"] == "Morning readings"
    [report] = files["reports.json"]
    assert (report["category"], report["comment"]) == ("spam", "looks like an advert")
    assert report["post"] == documents.thread_iri(olivias)

    # outbox.json: an OrderedCollection of his Creates, counted exactly
    outbox = files["outbox.json"]
    assert outbox["type"] == "OrderedCollection"
    assert outbox["id"] == documents.iris.member_outbox("max")
    assert outbox["totalItems"] == len(outbox["orderedItems"]) == 3
    creates = {item["object"]["source"]["content"]: item for item in outbox["orderedItems"]}
    assert {item["type"] for item in creates.values()} == {"Create"}
    assert {item["actor"] for item in creates.values()} == {max_iri}
    assert PUBLIC in creates["Walking helps me"]["to"]
    assert creates["Mine were high too"]["object"]["type"] == "Note"
    # A private group's post never federated: its Create is addressed to the group alone
    private = creates["Only for this room"]
    quiet_iri = documents.group_iri(quiet)
    assert private["to"] == private["object"]["to"] == [quiet_iri]
    assert PUBLIC not in json.dumps(private)
    # The public Create has the shape the node federated (its id aside)
    async with node.transaction() as session:
        sent = [
            json.loads(row.body)
            for row in (
                await session.execute(
                    OutboxActivity.__table__.select().where(
                        OutboxActivity.type == "Create", OutboxActivity.actor_iri == max_iri
                    )
                )
            ).all()
        ]
    page_iri = documents.thread_iri(public_thread)
    [federated] = [item for item in sent if item["object"]["id"] == page_iri]
    archived = creates["Walking helps me"]
    assert archived["id"] == f"{page_iri}#create"
    federated.pop("@context")
    assert {k: v for k, v in archived.items() if k not in ("id", "published")} == {
        k: v for k, v in federated.items() if k != "id"
    }


async def test_each_member_downloads_only_their_own_data(
    web_node: NodeContext, browser: Browser, browser_factory: Any
) -> None:
    node = web_node
    await browser.register("max")
    max_ = await member_named(node, "max")
    await add_group(node, max_, "sugar")
    await new_thread(node, "sugar", max_, "Max's thread", "max's private words")
    other = await browser_factory()
    await other.register("olivia")

    # olivia asks for max's export in every way a form could: she gets her own
    await other.get(EXPORT)
    for extra in ({"username": "max"}, {"member": "max", "member_id": str(max_.id)}):
        async with other.client.post(
            f"{EXPORT}?username=max", data={"csrf_token": other.token, **extra}
        ) as response:
            assert response.status == 200
            files = files_of(await response.read())
        assert files["profile.json"]["username"] == "olivia"
        assert files["posts.json"] == []
        assert files["outbox.json"]["totalItems"] == 0
        assert "max's private words" not in json.dumps(files)

    # Without the form's token, nothing is sent (403)
    async with other.client.post(EXPORT, data={}, allow_redirects=False) as response:
        assert response.status == 403
        assert response.content_type == "text/html"


async def test_anonymous_visitors_are_sent_to_sign_in(browser: Browser) -> None:
    async with browser.client.get(EXPORT, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/login?next=/account/export"
    await browser.get("/login")  # a page with a form: a valid token for the anonymous visitor
    data = {"csrf_token": browser.token}
    assert browser.token
    async with browser.client.post(EXPORT, data=data, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"].startswith("/login")
        assert response.content_type != "application/zip"


POSTS = 10_000
TEXT_BYTES = 300  # as hex, 600 characters of text that compress about 2:1


async def test_ten_thousand_posts_stream_in_bounded_memory(
    node: NodeContext, tmp_path: Path
) -> None:
    # Given a member with 10,000 posts (one thread and its replies, inserted in one statement)
    max_ = await add_member(node, "max")
    await add_group(node, max_, "sugar")
    thread = await new_thread(node, "sugar", max_, "Diary", "day one")
    opening = await opening_post(node, thread)
    now = node.clock.now()
    rows = []
    for _ in range(POSTS - 1):
        # Two random texts: the zip cannot make one out of the other, so it stays large.
        source, html = os.urandom(TEXT_BYTES).hex(), os.urandom(TEXT_BYTES).hex()
        rows.append(
            {"id": new_object_id(), "thread_id": thread.id, "parent_id": opening.id,
             "author_id": max_.id, "source": source, "content_html": f"<p>{html}</p>",
             "content_warning": "", "created_at": now}
        )  # fmt: skip
    async with node.transaction() as session:
        await session.execute(insert(Post), rows)
    del rows

    # When the archive is written to a file, with Python's allocations traced
    path = tmp_path / "export.zip"
    with path.open("wb") as sink:

        async def send(data: bytes) -> None:
            sink.write(data)

        tracemalloc.start()
        try:
            async with node.transaction(reading=True) as session:
                exported = await members.get_member(session, "max")
                tracemalloc.reset_peak()
                await export.write_archive(
                    session, exported, shapes=Documents(node.settings),
                    exported_at=node.clock.now(), send=send,
                )  # fmt: skip
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

    # Then it holds every post, twice (posts.json and outbox.json)...
    archive_size = path.stat().st_size
    with zipfile.ZipFile(path) as opened:
        uncompressed = sum(info.file_size for info in opened.infolist())
        assert len(json.loads(opened.read("posts.json"))) == POSTS
        outbox = json.loads(opened.read("outbox.json"))
    assert outbox["totalItems"] == len(outbox["orderedItems"]) == POSTS
    assert len({item["id"] for item in outbox["orderedItems"]}) == POSTS

    # ...while the peak of memory is that of a page of rows, whatever the number of posts:
    # on the reference run (SQLite) about 7 MiB for a 14 MiB zip of 37 MiB of JSON, a ratio
    # of 0.5 to the zip and 0.2 to its contents. An archive built in memory would hold at
    # least the whole zip (ratio > 1); one built from all the rows at once, their JSON (> 1
    # to the contents).
    ratio = peak / archive_size
    print(f"peak {peak / 2**20:.1f} MiB, zip {archive_size / 2**20:.1f} MiB, "
          f"contents {uncompressed / 2**20:.1f} MiB, peak/zip {ratio:.2f}")  # fmt: skip
    assert archive_size > 12 * 2**20
    assert peak < 12 * 2**20
    assert ratio < 0.75
    assert peak < uncompressed / 3


# --- healthnode member export (a subprocess, on a SQLite data dir) ----------------------------


async def seed_data_dir(data_dir: Path) -> None:
    """A node's data dir where max has a thread in a public group and one in a private one."""
    settings = Settings(domain="localhost:8080", data_dir=data_dir, password_cost=CHEAP_PASSWORDS)
    node = await NodeContext.open(settings)
    try:
        max_ = await add_member(node, "max")
        await add_group(node, max_, "sugar")
        quiet = await add_group(node, max_, "quiet", private=True, join_policy="request")
        await new_thread(node, "sugar", max_, "Evening walks", "Walking helps me")
        await new_thread(node, quiet.slug, max_, "Private worries", "Only for this room")
    finally:
        await node.close()


def test_an_admin_exports_a_members_data_to_a_private_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(seed_data_dir(data_dir))
    out = tmp_path / "max.zip"

    result = healthnode(tmp_path, "member", "export", "max", "--out", out, "--data-dir", data_dir)

    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    files = files_of(out.read_bytes())
    assert sorted(files) == sorted(export.FILE_NAMES)
    assert files["profile.json"]["username"] == "max"
    texts = {post["text"] for post in files["posts.json"]}
    assert texts == {"Walking helps me", "Only for this room"}
    assert files["outbox.json"]["totalItems"] == 2
    assert not list(tmp_path.glob("*.partial"))
    # The audit log says an export was made, node-wide, and of whom
    with closing(sqlite3.connect(data_dir / DATABASE_FILE)) as connection:
        logged = connection.execute(
            "SELECT action, reason, group_id, actor_label, member_id FROM moderation_log"
        ).fetchall()
        max_id = connection.execute("SELECT id FROM members WHERE username = 'max'").fetchone()[0]
    assert logged == [
        ("export_data", "data export requested in writing", None, "command line", max_id)
    ]


def test_exporting_an_unknown_member_writes_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(seed_data_dir(data_dir))
    out = tmp_path / "nobody.zip"

    result = healthnode(
        tmp_path, "member", "export", "nobody", "--out", out, "--data-dir", data_dir
    )

    assert result.returncode == 1
    assert result.error_line() == "healthnode: no member named nobody on this node"
    assert not out.exists()
    assert not list(tmp_path.glob("*.partial"))
    with closing(sqlite3.connect(data_dir / DATABASE_FILE)) as connection:
        assert connection.execute("SELECT count(*) FROM moderation_log").fetchone() == (0,)
