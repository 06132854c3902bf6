"""Every page of the site, for the browser checks of tests/test_page_quality.py (axe-core,
360 px, 200 % text, page weight, screenshots), and a seeded node that gives each page's
address something to show.

A new page goes in PAGES, with who may open it; a new GET route that is not a page (JSON,
a redirect, a one-time link) goes in NOT_PAGES with the reason. tests/test_page_catalogue.py
fails while a GET route registered in the app is in neither."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from node import groups, members, membership, moderation, posts, professionals, qa
from node.policy import Viewer
from node.runtime import NodeContext
from node.storage.models import Member, Post
from tests.browser import DEFAULT_PASSWORD

VISITOR, MEMBER, MODERATOR, OWNER, ADMIN = "visitor", "member", "moderator", "owner", "admin"
EVERYONE = (VISITOR, MEMBER, MODERATOR, ADMIN)
# The seeded account behind each signed-in role.
USERNAME = {MEMBER: "bob", MODERATOR: "mo", OWNER: "alice", ADMIN: "ada"}


@dataclass(frozen=True)
class PageCase:
    """`path` may name seeded things: {group} {private} {thread} {qa_thread} {post} {reply}
    {report} {member} (bob). `shot` names the screenshot of a main page (build/screenshots/)."""

    path: str
    who: tuple[str, ...]
    shot: str = ""


PAGES: list[PageCase] = [
    # Public pages, signed out and in (the header differs).
    PageCase("/", EVERYONE, shot="groups"),
    PageCase("/g/{group}", EVERYONE, shot="group"),
    PageCase("/t/{thread}", EVERYONE, shot="thread"),
    PageCase("/t/{qa_thread}?page=2", EVERYONE),  # an expert Q&A's second page of questions
    PageCase("/g/{group}/members", EVERYONE),
    PageCase("/u/{member}", EVERYONE, shot="profile"),
    PageCase("/help", EVERYONE),
    PageCase("/about", EVERYONE, shot="about"),
    PageCase("/search?q=pacing", EVERYONE, shot="search"),
    PageCase("/privacy", (VISITOR, MEMBER)),
    PageCase("/register", (VISITOR,), shot="register"),
    PageCase("/login", (VISITOR,), shot="sign-in"),
    PageCase("/recover", (VISITOR,)),
    PageCase("/account/recover", (VISITOR,)),
    # A member's own pages.
    PageCase("/feed", (MEMBER,), shot="feed"),
    PageCase("/groups/new", (MEMBER,)),
    PageCase("/g/{group}/new", (MEMBER,), shot="new-thread"),
    PageCase("/g/{private}", (MEMBER,)),
    PageCase("/t/{private_thread}", (MEMBER,)),
    PageCase("/p/{reply}/edit", (MEMBER,)),
    PageCase("/p/{reply}/delete", (MEMBER,)),
    PageCase("/p/{post}/report", (MEMBER,)),
    PageCase("/u/{owner}/report", (MEMBER,)),
    PageCase("/reports/mine", (MEMBER,)),
    PageCase("/notifications", (MEMBER,), shot="notifications"),
    PageCase("/account/notifications", (MEMBER,)),
    PageCase("/settings/profile", (MEMBER,)),
    PageCase("/account/password", (MEMBER,)),
    PageCase("/account/sessions", (MEMBER,)),
    PageCase("/account/email", (MEMBER,)),
    PageCase("/account/consent", (MEMBER,)),
    PageCase("/account/consent/withdraw", (MEMBER,)),
    PageCase("/account/export", (MEMBER,)),
    PageCase("/account/delete", (MEMBER,)),
    PageCase("/authorize_interaction?uri=group%40example.org", (MEMBER,)),
    # A group moderator's pages.
    PageCase("/g/{group}/moderation", (MODERATOR,), shot="group-moderation"),
    PageCase("/g/{group}/reports", (MODERATOR,)),
    PageCase("/g/{group}/moderation/log", (MODERATOR,)),
    PageCase("/g/{group}/moderation/ban?username=bob", (MODERATOR,)),
    PageCase("/g/{group}/held", (MODERATOR,)),
    PageCase("/reports/{report}", (MODERATOR,)),
    PageCase("/p/{anonymous}/reveal", (MODERATOR,)),
    # The group owner's pages.
    PageCase("/g/{group}/settings", (OWNER,), shot="group-settings"),
    PageCase("/g/{group}/qa/new", (OWNER,)),
    PageCase("/g/{group}/dashboard", (OWNER,), shot="group-dashboard"),
    # An admin's pages.
    PageCase("/admin", (ADMIN,), shot="admin-dashboard"),
    PageCase("/admin/settings", (ADMIN,), shot="admin-settings"),
    PageCase("/admin/members", (ADMIN,), shot="admin-members"),
    PageCase("/admin/members/{member}", (ADMIN,)),
    PageCase("/admin/reports", (ADMIN,), shot="admin-reports"),
    PageCase("/admin/federation", (ADMIN,), shot="admin-federation"),
    PageCase("/admin/audit", (ADMIN,)),
    PageCase("/admin/privacy", (ADMIN,)),
    PageCase("/admin/search-engines", (ADMIN,)),
    PageCase("/admin/professionals", (ADMIN,)),
    PageCase("/admin/crisis", (ADMIN,)),
    PageCase("/admin/members/{member}/reset-link", (ADMIN,)),
]

# GET routes that are not pages a person reads, by the route's pattern.
NOT_PAGES: dict[str, str] = {
    "/.well-known/webfinger": "JSON for other servers",
    "/.well-known/nodeinfo": "JSON for other servers",
    "/.well-known/host-meta": "XML for other servers",
    "/.well-known/host-meta.json": "JSON for other servers",
    "/nodeinfo/2.1": "JSON for other servers",
    "/actor": "the instance actor, ActivityStreams JSON",
    "/actor/outbox": "ActivityStreams JSON",
    "/actor/followers": "ActivityStreams JSON",
    "/u/{username}/outbox": "ActivityStreams JSON",
    "/u/{username}/followers": "ActivityStreams JSON",
    "/g/{slug}/outbox": "ActivityStreams JSON",
    "/g/{slug}/followers": "ActivityStreams JSON",
    "/g/{slug}/moderators": "ActivityStreams JSON",
    "/g/{slug}/featured": "ActivityStreams JSON",
    "/activities/{activity_id}": "ActivityStreams JSON",
    "/robots.txt": "plain text for crawlers",
    "/healthz": "plain text for load balancers",
    "/readyz": "plain text for load balancers",
    "/static/{name}": "the stylesheet itself (tests/test_static_assets.py)",
    "/notices": "redirects to /notifications (moderators' warnings are notifications now)",
    "/logo/{name}": "the node's logo image (tests/test_node_identity.py)",
    "/p/{post_id}": "redirects to the post's place on its thread page",
    "/reset/{token}": "a one-time link an admin hands over; the form is register's fields",
    "/recover/{token}": "a one-time link sent by email (tests/test_email.py)",
    "/account/email/confirm/{token}": "a one-time link sent by email (tests/test_email.py)",
    "/g/{slug}/ask/{code}": "a private group's join link: a short form, as /g/{slug}'s",
}


@dataclass(frozen=True)
class Seeded:
    names: dict[str, str]

    def address(self, case: PageCase) -> str:
        return case.path.format(**self.names)


async def _qa_of_two_pages(
    session: AsyncSession, node: NodeContext, owner_view: groups.GroupView, ids: dict[str, int]
) -> str:
    """alice's expert Q&A in the public group, answered by mo (a verified nurse), with one
    question more than a page holds, each answered by mo and by alice."""
    now = node.clock.now()
    limits = node.settings.limits
    mo = await session.get(Member, ids["mo"])
    assert mo is not None
    await professionals.verify(session, mo, title="Registered nurse", now=now)
    thread = await qa.schedule(
        session, limits, owner_view, topic="Sleep and fatigue", intro="Ask the nurse.",
        experts="mo", starts_at=now, ends_at=now + timedelta(days=1), zone=ZoneInfo("UTC"),
        now=now,
    )  # fmt: skip
    for number in range(posts.QA_PAGE_QUESTIONS + 1):
        question = await posts.reply(
            session, limits, Viewer(ids["alice"]), thread_id=thread.id, parent_id=None,
            draft=posts.Draft(f"Does napping after {number + 1} pm spoil the night's sleep?"),
            now=now,
        )  # fmt: skip
        for who in ("mo", "alice"):
            await posts.reply(
                session, limits, Viewer(ids[who]), thread_id=thread.id, parent_id=question.id,
                draft=posts.Draft("Short rests before mid-afternoon rarely do; keep them brief."),
                now=now,
            )  # fmt: skip
    return thread.id


async def seed(node: NodeContext) -> Seeded:
    """alice owns the public group and a private one; mo moderates the public group; bob
    belongs to both, replied, reported alice's post and posted anonymously in the private
    group; mo moderates both groups; ada is an admin."""
    now = node.clock.now()
    limits = node.settings.limits
    async with node.transaction() as session:
        ids = {}
        for username, display in (("alice", "Alice"), ("mo", "Mo"), ("bob", "Bob"), ("ada", "")):
            member = await members.create_member(
                session, node.passwords, limits, username=username, password=DEFAULT_PASSWORD,
                display_name=display or username, now=now, is_admin=username == "ada",
            )  # fmt: skip
            ids[username] = member.id
        await groups.create_group(
            session, limits, owner_id=ids["alice"], slug="long_covid",
            name="Long COVID carers", description="Support for people caring for someone.",
            rules="Be kind.", tags="long-covid, carers", now=now,
        )  # fmt: skip
        private = await groups.create_group(
            session, limits, owner_id=ids["alice"], slug="night_shift",
            name="Night shift", description="A private room.", private=True, now=now,
        )  # fmt: skip
        for slug in ("long_covid", private.slug):
            owner_view = await groups.view_group(session, slug, Viewer(ids["alice"]))
            for username in ("mo", "bob"):
                await membership.invite(session, owner_view, username, now)
                view = await groups.view_group(session, slug, Viewer(ids[username]))
                await membership.join(session, view, now)
            await membership.set_role(session, owner_view, "mo", "moderator", now)
        owner_view = await groups.view_group(session, "long_covid", Viewer(ids["alice"]))
        bob_private = await groups.view_group(session, private.slug, Viewer(ids["bob"]))
        thread = await posts.start_thread(
            session, limits, owner_view, title="Pacing on bad days",
            draft=posts.Draft(
                "What helps you plan a day? A **list**, a _timer_?\n\n"
                "```\nmonday:    rest 10:00-11:00, short walk, rest 14:00-15:00, "
                "call the surgery about the repeat prescription\n```\n\n"
                + "averyveryverylongword" * 12
            ),
            now=now,
        )  # fmt: skip
        reply = await posts.reply(
            session, limits, Viewer(ids["bob"]), thread_id=thread.id, parent_id=None,
            draft=posts.Draft("Lists on the fridge help me.\n\n> a quote\n\n- one\n- two"),
            now=now,
        )  # fmt: skip
        private_thread = await posts.start_thread(
            session, limits, bob_private, title="Who else is up?",
            draft=posts.Draft("3 am again."), now=now,
        )  # fmt: skip
        anonymous = await posts.reply(
            session, limits, Viewer(ids["bob"]), thread_id=private_thread.id, parent_id=None,
            draft=posts.Draft("Me, every night."), now=now, anonymous=True,
        )  # fmt: skip
        qa_thread = await _qa_of_two_pages(session, node, owner_view, ids)
        opening = await session.scalar(
            select(Post.id).where(Post.thread_id == thread.id, Post.parent_id.is_(None))
        )
        assert opening is not None
        report = await moderation.report_post(
            session, Viewer(ids["bob"]), post_id=opening, category="spam",
            comment="Looks like an advert.", now=now,
        )  # fmt: skip
    names = {
        "group": "long_covid",
        "private": private.slug,
        "thread": thread.id,
        "private_thread": private_thread.id,
        "qa_thread": qa_thread,
        "post": opening,
        "reply": reply.id,
        "anonymous": anonymous.id,
        "report": str(report.id),
        "member": "bob",
        "owner": "alice",
    }
    return Seeded(names)
