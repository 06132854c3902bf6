"""Optional email against a real SMTP server (aiosmtpd) on loopback: confirming an address,
password recovery by email, reply notifications, and an address that nobody else ever sees
(docs/POLICY.md, "Email (optional)")."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from node import email_addresses, members
from node.config import SmtpSettings, SmtpTls, parse_smtp
from node.runtime import NodeContext
from node.storage.models import EmailToken, Post
from tests.browser import DEFAULT_PASSWORD, Browser
from tests.clock import ManualClock
from tests.conftest import BrowserFactory, NodeFactory
from tests.federation_harness import eventually, free_port
from tests.test_web_flows import create_group
from web.app import create_app
from web.serving import RouteAccessLogger

ClientFactory = Callable[..., Awaitable[TestClient]]
ALICE_EMAIL = "alice.private@example.org"
LINK = re.compile(r"http://localhost:8080(/\S+)")


@dataclass
class Inbox:
    """What the test's SMTP server received, for one recipient or all."""

    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [message for message in self.messages if message["To"] == address]

    async def next_for(self, address: str, already: int = 0) -> EmailMessage:
        async def arrived() -> EmailMessage | None:
            received = self.to(address)
            return received[already] if len(received) > already else None

        return await eventually(arrived, f"mail number {already + 1} to the test address")


def body_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def link_in(message: EmailMessage) -> str:
    match = LINK.search(body_of(message))
    assert match, body_of(message)
    return match.group(1)


@dataclass
class MailServer:
    inbox: Inbox
    controller: Controller
    port: int
    running: bool = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.controller.stop()

    def settings(self) -> SmtpSettings:
        return SmtpSettings(
            host="127.0.0.1",
            port=self.port,
            tls=SmtpTls.NONE,
            from_address="healthnode@example.org",
            timeout_seconds=5,
        )


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    server = MailServer(inbox, controller, port)
    yield server
    server.stop()


@pytest.fixture
async def web_node(make_node: NodeFactory, mail_server: MailServer) -> NodeContext:
    return await make_node(smtp=mail_server.settings())


@pytest.fixture
async def browser_factory(web_node: NodeContext, aiohttp_client: ClientFactory) -> BrowserFactory:
    """Browsers on the node served with its own access log (`healthnode serve`'s), whose
    lines the log checks below read too."""
    server = TestServer(create_app(web_node))
    await server.start_server(access_log_class=RouteAccessLogger)

    async def new_browser() -> Browser:
        return Browser(await aiohttp_client(server))

    return new_browser


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # What `healthnode serve` logs (INFO and up), and everything our own code logs; not the
    # database drivers' DEBUG traces of every statement's parameters, which no node enables.
    caplog.set_level(logging.INFO)
    for ours in ("node", "web", "federation", "keys"):
        caplog.set_level(logging.DEBUG, logger=ours)
    yield caplog


def assert_not_logged(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    for record in caplog.records:
        if record.name.startswith("mail."):
            continue  # the test's own SMTP server (aiosmtpd) logs what it receives
        text = f"{record.getMessage()} {record.exc_text or ''}"
        for secret in secrets:
            assert secret not in text, f"{secret!r} logged by {record.name}: {text[:300]}"


async def add_email(browser: Browser, inbox: Inbox, address: str) -> None:
    """Add and confirm `address` through the pages and the mail."""
    before = len(inbox.to(address))
    await browser.get("/account/email")
    page = await browser.post("/account/email", {"action": "add", "email": address})
    assert page.status == 200, page.text
    message = await inbox.next_for(address, before)
    confirm = link_in(message)
    page = await browser.get(confirm)
    assert page.status == 200, page.text
    page = await browser.post(confirm)
    assert page.status == 200, page.text
    assert "Your email address is confirmed" in page.text


async def test_an_added_address_is_confirmed_by_the_link_it_receives(
    browser: Browser, mail_server: MailServer, web_node: NodeContext, logs: Any
) -> None:
    await browser.register("alice")

    # When alice adds an address, it is not hers until its link is followed
    await browser.get("/account/email")
    page = await browser.post("/account/email", {"action": "add", "email": ALICE_EMAIL})
    assert page.status == 200, page.text
    assert "Waiting for confirmation" in page.text
    message = await mail_server.inbox.next_for(ALICE_EMAIL)
    assert "localhost:8080" in message["Subject"]
    link = link_in(message)
    assert "You have no confirmed address" in (await browser.get("/account/email")).text

    # Then following the link (and pressing its button) confirms it, once
    assert (await browser.get(link)).status == 200
    page = await browser.post(link)
    assert page.status == 200 and "confirmed" in page.text
    assert f"Your confirmed address: {ALICE_EMAIL}" in (await browser.get("/account/email")).text
    assert (await browser.get(link)).status == 404
    assert (await browser.post(link)).status == 404

    # Only the SHA-256 of the link's token is stored
    token = link.rsplit("/", 1)[1]
    async with web_node.transaction(reading=True) as session:
        hashes = (await session.execute(select(EmailToken.token_hash))).scalars().all()
    assert hashes and token not in hashes
    assert_not_logged(logs, ALICE_EMAIL, token)


async def test_a_confirmation_link_expires_after_a_day(
    browser: Browser, mail_server: MailServer, web_node: NodeContext
) -> None:
    await browser.register("alice")
    await browser.get("/account/email")
    await browser.post("/account/email", {"action": "add", "email": ALICE_EMAIL})
    link = link_in(await mail_server.inbox.next_for(ALICE_EMAIL))
    assert isinstance(web_node.clock, ManualClock)
    web_node.clock.advance(timedelta(hours=24))
    assert (await browser.post(link)).status == 404
    assert "You have no confirmed address" in (await browser.get("/account/email")).text


async def test_a_malformed_address_is_refused_on_the_page(browser: Browser) -> None:
    await browser.register("alice")
    await browser.get("/account/email")
    for bad in ("not an address", "a@b", "x@example.org\r\nBcc: y@example.org", "a" * 300):
        page = await browser.post("/account/email", {"action": "add", "email": bad})
        assert page.status == 400, page.text
        assert "Please give an email address" in page.text


async def test_recovery_by_email_works_once_and_signs_out_every_session(
    browser_factory: BrowserFactory, mail_server: MailServer, logs: Any
) -> None:
    alice = await browser_factory()
    await alice.register("alice")
    await add_email(alice, mail_server.inbox, ALICE_EMAIL)
    sent_before = len(mail_server.inbox.to(ALICE_EMAIL))

    # Given a visitor who forgot the password, starting from the sign-in page
    visitor = await browser_factory()
    assert 'href="/recover"' in (await visitor.get("/login")).html
    assert 'href="/account/recover"' in (await visitor.get("/recover")).html
    await visitor.get("/account/recover")
    page = await visitor.post("/account/recover", {"who": "alice"})
    assert page.status == 200, page.text
    link = link_in(await mail_server.inbox.next_for(ALICE_EMAIL, sent_before))
    assert link.startswith("/recover/")

    # When a new password is chosen through the link
    assert (await visitor.get(link)).status == 200
    mismatch = await visitor.post(link, {"password": "new secret 1", "password_again": "other"})
    assert mismatch.status == 400 and "not the same" in mismatch.text
    short = await visitor.post(link, {"password": "short", "password_again": "short"})
    assert short.status == 400
    new_password = "a brand new passphrase"
    page = await visitor.post(link, {"password": new_password, "password_again": new_password})
    assert page.status == 200, page.text
    assert "Your password is changed" in page.text

    # Then the link is spent, alice's open session is signed out, and the new password works
    assert (await visitor.get(link)).status == 404
    again = await visitor.post(link, {"password": "x" * 12, "password_again": "x" * 12})
    assert again.status == 404
    assert (await alice.get("/account/email")).path.startswith("/login")
    assert "do not match" in (await visitor.login("alice", DEFAULT_PASSWORD)).text
    signed_in = await visitor.login("alice", new_password)
    assert signed_in.status == 200 and signed_in.path == "/"
    assert_not_logged(logs, ALICE_EMAIL, link.rsplit("/", 1)[1], new_password)


async def test_a_recovery_link_expires_after_an_hour(
    browser_factory: BrowserFactory, mail_server: MailServer, web_node: NodeContext
) -> None:
    alice = await browser_factory()
    await alice.register("alice")
    await add_email(alice, mail_server.inbox, ALICE_EMAIL)
    sent_before = len(mail_server.inbox.to(ALICE_EMAIL))
    visitor = await browser_factory()
    await visitor.get("/account/recover")
    await visitor.post("/account/recover", {"who": ALICE_EMAIL.upper()})  # by address, any case
    link = link_in(await mail_server.inbox.next_for(ALICE_EMAIL, sent_before))
    assert isinstance(web_node.clock, ManualClock)
    web_node.clock.advance(timedelta(hours=1))
    assert (await visitor.get(link)).status == 404
    page = await visitor.post(link, {"password": "x" * 12, "password_again": "x" * 12})
    assert page.status == 404
    assert (await visitor.login("alice", DEFAULT_PASSWORD)).path == "/"


async def test_recovery_answers_the_same_whether_or_not_the_account_exists(
    browser_factory: BrowserFactory, mail_server: MailServer
) -> None:
    alice = await browser_factory()
    await alice.register("alice")
    await add_email(alice, mail_server.inbox, ALICE_EMAIL)
    bob = await browser_factory()
    await bob.register("bob")  # an account without an address
    sent_before = len(mail_server.inbox.messages)
    alice_before = len(mail_server.inbox.to(ALICE_EMAIL))

    visitor = await browser_factory()
    await visitor.get("/account/recover")
    answers = {}
    for who in ("nobody", "nobody@example.org", "bob", "alice"):
        page = await visitor.post("/account/recover", {"who": who})
        assert page.status == 200, page.text
        answers[who] = page.text.replace(who, "WHO")
    assert len(set(answers.values())) == 1, answers

    # Only alice's address received anything
    await mail_server.inbox.next_for(ALICE_EMAIL, alice_before)
    assert [m["To"] for m in mail_server.inbox.messages[sent_before:]] == [ALICE_EMAIL]


async def test_recovery_requests_are_limited_per_address(
    browser: Browser, web_node: NodeContext
) -> None:
    free = web_node.settings.limits.rates.recoveries_per_address.free
    await browser.get("/account/recover")
    for _ in range(free):
        assert (await browser.post("/account/recover", {"who": "nobody"})).status == 200
    page = await browser.post("/account/recover", {"who": "nobody"})
    assert page.status == 429
    assert "Please wait" in page.text


async def test_the_address_appears_only_on_its_members_own_page(
    browser_factory: BrowserFactory, mail_server: MailServer, web_node: NodeContext, logs: Any
) -> None:
    async with web_node.transaction() as session:
        await members.create_member(
            session,
            web_node.passwords,
            web_node.settings.limits,
            username="admin",
            password=DEFAULT_PASSWORD,
            display_name="Admin",
            now=web_node.clock.now(),
            is_admin=True,
        )
    alice = await browser_factory()
    await alice.register("alice")
    await add_email(alice, mail_server.inbox, ALICE_EMAIL)
    await create_group(alice, "t1d", "Type 1 diabetes")
    thread = await alice.post("/g/t1d/new", {"title": "Night hypos", "body": "Anyone else?"})
    assert thread.status == 200
    assert ALICE_EMAIL in (await alice.get("/account/email")).text

    admin = await browser_factory()
    await admin.login("admin")
    anonymous = await browser_factory()
    pages = ["/", "/u/alice", "/g/t1d", "/g/t1d/members", thread.path]
    admin_pages = ["/admin/reports", "/admin/audit", "/admin/federation", "/admin/crisis"]
    for viewer, paths in ((anonymous, pages), (admin, pages + admin_pages), (alice, pages)):
        for path in paths:
            page = await viewer.get(path)
            assert page.status == 200, f"{path}: {page.status}"
            assert ALICE_EMAIL not in page.html, path
    # The actor document and the outbox, as another server fetches them
    for path in ("/u/alice", "/u/alice/outbox", "/u/alice/outbox?page=1"):
        document = await anonymous.get(path, Accept="application/activity+json")
        assert document.status == 200, path
        assert ALICE_EMAIL not in document.html and "example.org" not in document.html
    # Nobody but alice may open her address page
    assert (await admin.get("/account/email")).text.count(ALICE_EMAIL) == 0
    assert (await anonymous.get("/account/email")).path.startswith("/login")
    assert_not_logged(logs, ALICE_EMAIL)


async def opt_in_to_replies(alice: Browser, mode: str = "immediate") -> None:
    await alice.get("/account/email")
    page = await alice.post(
        "/account/email", {"action": "notifications", "notification_email": mode}
    )
    assert page.status == 200
    assert f'name="notification_email" value="{mode}" checked' in page.html


async def test_a_reply_notification_says_only_that_there_is_a_reply(
    browser_factory: BrowserFactory, mail_server: MailServer, logs: Any
) -> None:
    alice = await browser_factory()
    await alice.register("alice")
    await add_email(alice, mail_server.inbox, ALICE_EMAIL)
    await create_group(alice, "t1d", "Type 1 diabetes")
    thread = await alice.post("/g/t1d/new", {"title": "Night hypos", "body": "Anyone else?"})
    bob = await browser_factory()
    await bob.register("bob")
    await bob.post("/g/t1d/join")

    # Without opting in, a reply sends nothing; alice's own replies never do
    await bob.post(f"{thread.path}/reply", {"body": "Not me, sorry."})
    await opt_in_to_replies(alice)
    await alice.post(f"{thread.path}/reply", {"body": "Thanks anyway."})
    sent_before = len(mail_server.inbox.to(ALICE_EMAIL))

    # When bob replies after she opted in
    page = await bob.post(f"{thread.path}/reply", {"body": "Yes, every single week."})
    assert page.status == 200

    # Then one generic message arrives, with a link to the thread and nothing of the post
    message = await mail_server.inbox.next_for(ALICE_EMAIL, sent_before)
    assert len(mail_server.inbox.to(ALICE_EMAIL)) == sent_before + 1
    assert message["Subject"] == "New on healthnode (localhost:8080)"
    text = f"{message['Subject']} {body_of(message)}"
    # (the reply before she opted in is unread and was never emailed: it is counted too)
    assert "2 new replies to your posts" in text
    assert link_in(message) == "/notifications"
    for private in ("every single week", "Night hypos", "Type 1 diabetes", "t1d", "bob"):
        assert private not in text, private
    assert_not_logged(logs, ALICE_EMAIL, "every single week")


async def test_a_reply_is_kept_when_the_mail_server_is_down(
    browser_factory: BrowserFactory, mail_server: MailServer, web_node: NodeContext, logs: Any
) -> None:
    alice = await browser_factory()
    await alice.register("alice")
    await add_email(alice, mail_server.inbox, ALICE_EMAIL)
    await opt_in_to_replies(alice)
    await create_group(alice, "t1d", "Type 1 diabetes")
    thread = await alice.post("/g/t1d/new", {"title": "Night hypos", "body": "Anyone else?"})
    bob = await browser_factory()
    await bob.register("bob")
    await bob.post("/g/t1d/join")

    # Given the mail server has gone away
    mail_server.stop()

    # When bob replies, the reply is published at once and the failed send is only logged
    page = await bob.post(f"{thread.path}/reply", {"body": "Yes, every week."})
    assert page.status == 200, page.text
    assert "Yes, every week." in page.text
    async with web_node.transaction(reading=True) as session:
        stored = await session.scalar(
            select(func.count()).select_from(Post).where(Post.source == "Yes, every week.")
        )
    assert stored == 1

    async def logged_failure() -> bool:
        return any("email not sent (notifications)" in r.getMessage() for r in logs.records)

    await eventually(logged_failure, "the failed send in the log")
    assert_not_logged(logs, ALICE_EMAIL)

    # And asking for a confirmation or a recovery link still answers normally
    page = await alice.post("/account/email", {"action": "add", "email": "other@example.org"})
    assert page.status == 200
    visitor = await browser_factory()
    await visitor.get("/account/recover")
    assert (await visitor.post("/account/recover", {"who": "alice"})).status == 200


async def test_a_node_without_a_mail_server_offers_no_email(
    make_node: NodeFactory, aiohttp_client: ClientFactory
) -> None:
    node = await make_node("plain")
    browser = Browser(await aiohttp_client(TestServer(create_app(node, run_workers=False))))
    await browser.register("alice")
    page = await browser.get("/account/email")
    assert page.status == 404, page.text
    page = await browser.get("/account/recover")
    assert page.status == 200 and "Ask the node's admins" in page.text
    assert (await browser.post("/account/recover", {"who": "alice"})).status == 404


def test_smtp_settings_come_from_the_environment() -> None:
    prefix = "HEALTHNODE_SMTP_"
    assert parse_smtp({}, prefix) is None
    smtp = parse_smtp(
        {
            prefix + "HOST": "mail.example.org",
            prefix + "TLS": "tls",
            prefix + "USER": "node",
            prefix + "PASSWORD": "secret",
            prefix + "FROM": "healthnode@example.org",
        },
        prefix,
    )
    assert smtp is not None
    assert (smtp.host, smtp.port, smtp.tls, smtp.user) == (
        "mail.example.org",
        465,
        SmtpTls.TLS,
        "node",
    )
    assert "secret" not in repr(smtp)
    for bad, reason in (
        ({prefix + "HOST": "h", prefix + "FROM": "a@b.org", prefix + "TLS": "ssl"}, "TLS"),
        ({prefix + "HOST": "h", prefix + "FROM": "a@b.org", prefix + "PORT": "99999"}, "PORT"),
        ({prefix + "HOST": "h"}, "FROM"),
        ({prefix + "HOST": "h", prefix + "FROM": "a@b.org", prefix + "USER": "u"}, "PASSWORD"),
        ({prefix + "PORT": "25"}, "HOST"),
        ({prefix + "HOSTNAME": "h"}, "HOSTNAME"),
    ):
        with pytest.raises(ValueError, match=reason):
            parse_smtp(bad, prefix)


async def test_a_daily_digest_counts_and_never_quotes_a_private_group(
    browser_factory: BrowserFactory, mail_server: MailServer, web_node: NodeContext
) -> None:
    # Given alice, who chose a daily digest, with a thread in a public group and one in a
    # private group, where bob (invited) is a member
    alice = await browser_factory()
    await alice.register("alice")
    await add_email(alice, mail_server.inbox, ALICE_EMAIL)
    await opt_in_to_replies(alice, "daily")
    await create_group(alice, "t1d", "Type 1 diabetes")
    public = await alice.post("/g/t1d/new", {"title": "Night hypos", "body": "Anyone else?"})
    await alice.get("/groups/new")
    fields = {"slug": "", "tags": "", "name": "Quiet room", "visibility": "private"}
    group = (await alice.post("/groups/new", {**fields, "join_policy": "invite"})).path
    private = await alice.post(f"{group}/new", {"title": "Secret worries", "body": "Hush."})
    bob = await browser_factory()
    await bob.register("bob")
    await alice.get(f"{group}/moderation")
    await alice.post(f"{group}/moderation/invite", {"username": "bob"})
    assert (await bob.post(f"{group}/join")).status == 200
    await bob.post("/g/t1d/join")
    sent_before = len(mail_server.inbox.to(ALICE_EMAIL))

    # When bob replies twice in public and once in private, nothing is sent at once
    for body in ("Every night.", "Every single night."):
        assert (await bob.post(f"{public.path}/reply", {"body": body})).status == 200
    await bob.post(f"{private.path}/reply", {"body": "My private fear."})
    assert web_node.mailer is not None
    async with web_node.transaction() as session:
        sent = await email_addresses.send_digests(
            session, web_node.settings, web_node.mailer, web_node.clock.now()
        )
    assert sent == 1

    # Then one digest counts them, naming no group, title, person or text
    message = await mail_server.inbox.next_for(ALICE_EMAIL, sent_before)
    text = f"{message['Subject']} {body_of(message)}"
    assert "2 new replies to your posts" in text
    assert "1 new reply to your posts in a private group" in text
    assert link_in(message) == "/notifications"
    for secret in ("Quiet room", "Secret worries", "My private fear", "Night hypos", "bob"):
        assert secret not in text, secret
    assert "Type 1 diabetes" not in text
    # And a second run sends nothing: each is told once
    async with web_node.transaction() as session:
        again = await email_addresses.send_digests(
            session, web_node.settings, web_node.mailer, web_node.clock.now()
        )
    assert again == 0
