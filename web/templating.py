"""The jinja2 environment: autoescaped templates shipped in the package."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any

import jinja2
from markupsafe import Markup, escape

from node import ids
from node.members import handle_of
from node.posts import anonymity_offered
from node.time_zones import zone_label
from web.assets import static_url

# What `render` puts in every page's context: the zone the reader sees times in, and now.
READER_ZONE = "reader_zone"
READER_NOW = "reader_now"
# Up to this many days a time reads as "3 days ago"; older ones as a date.
RELATIVE_DAYS = 30


def _zone(context: Any) -> tzinfo:
    zone = context.get(READER_ZONE)
    return zone if isinstance(zone, tzinfo) else UTC


def absolute(moment: datetime, zone: tzinfo = UTC) -> str:
    """The time in the reader's zone, naming the zone: 7 Dec 2026, 14:05 GMT."""
    return moment.astimezone(zone).strftime("%-d %b %Y, %H:%M ") + zone_label(zone, moment)


@jinja2.pass_context
def _when(context: Any, moment: datetime | None) -> str:
    return absolute(moment, _zone(context)) if moment else ""


def relative(moment: datetime, now: datetime, zone: tzinfo = UTC) -> str:
    """How long ago (2 hours ago) up to a month back; then the date in the reader's zone."""
    if (now - moment).days >= RELATIVE_DAYS:
        return moment.astimezone(zone).strftime("%-d %b %Y")
    return _since(moment, now)


@jinja2.pass_context
def _timestamp(context: Any, moment: datetime | None) -> Markup:
    """A <time> saying how long ago, with the exact time (reader's zone) as its title."""
    if moment is None:
        return Markup("")
    zone = _zone(context)
    now = context.get(READER_NOW)
    shown = relative(moment, now, zone) if isinstance(now, datetime) else absolute(moment, zone)
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        moment.isoformat(), absolute(moment, zone), escape(shown)
    )


def _since(moment: datetime, now: datetime) -> str:
    """How long ago, in the largest whole unit: what a queue shows of a report's age."""
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


SMALL_COUNT_BELOW = 10


def _count_of(count: int, noun: str) -> str:
    """A count of people as the public sees it: between 1 and 9 only "fewer than 10", so a
    small group's size does not help anyone work out who is in it."""
    shown = f"fewer than {SMALL_COUNT_BELOW}" if 0 < count < SMALL_COUNT_BELOW else str(count)
    return f"{shown} {noun}s"  # never "1 member": one is fewer than ten


# The admins' pages, in the order the admin navigation lists them (one list, every page).
ADMIN_PAGES: tuple[tuple[str, str], ...] = (
    (ids.ADMIN_DASHBOARD_PAGE, "Dashboard"),
    (ids.ADMIN_MEMBERS_PAGE, "Members"),
    (ids.ADMIN_REPORTS_PAGE, "Reports"),
    (ids.ADMIN_AUDIT_PAGE, "Audit log"),
    (ids.ADMIN_FEDERATION_PAGE, "Federation"),
    (ids.ADMIN_SETTINGS_PAGE, "Node settings"),
    (ids.ADMIN_PRIVACY_PAGE, "Privacy notice"),
    (ids.ADMIN_SEARCH_ENGINES_PAGE, "Search engines"),
    (ids.ADMIN_PROFESSIONALS_PAGE, "Professionals"),
    (ids.ADMIN_CRISIS_PAGE, "Crisis support"),
)


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


def create_environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("web", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = _when
    environment.filters["iso"] = _iso
    environment.filters["since"] = _since
    environment.filters["count_of"] = _count_of
    environment.globals.update(
        group_href=lambda group: ids.group_path(group.slug, group.domain),
        # A remote person's profile lives on their own server.
        member_href=lambda member: (
            member.profile_url or member.actor_iri
            if member.domain
            else ids.member_path(member.username)
        ),
        member_path=ids.member_path,
        handle_of=handle_of,
        group_path=ids.group_path,
        thread_path=ids.thread_path,
        post_path=ids.post_path,
        search_path=ids.search_path,
        search_page=ids.SEARCH_PAGE,
        feed_path=ids.FEED_PAGE,
        thread_subscription_path=ids.thread_subscription_path,
        help_path=ids.HELP_PAGE,
        admin_crisis_path=ids.ADMIN_CRISIS_PAGE,
        admin_reset_link_path=ids.admin_reset_link_path,
        admin_member_action_path=ids.admin_member_action_path,
        admin_pages=ADMIN_PAGES,
        admin_members_path=ids.ADMIN_MEMBERS_PAGE,
        admin_path=ids.ADMIN_DASHBOARD_PAGE,
        list_page_path=ids.list_page_path,
        about_path=ids.ABOUT_PAGE,
        anonymity_offered=anonymity_offered,
        static_url=static_url,
        timestamp=_timestamp,
    )
    return environment
