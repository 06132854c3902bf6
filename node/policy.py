"""Who may see and do what in a condition group. Every route and federation path asks here.

The matrix (docs/POLICY.md has it as a table):
- A public group is readable by anyone; its member list only by its active members (moderators
  among them) and the node's admins, as belonging to a health group discloses a condition; its
  moderators are listed to anyone. Only active members post, reply and react.
- A private group exists only for its active members, its invited and pending people (who see
  its name and their own standing, nothing else) and the node's admins. Everyone else gets the
  same answer as for a group that does not exist.
- Moderators and owners moderate their group; node admins moderate every group, and may read a
  private group to do so, but post only where they are active members.
- Only a group's owner edits its settings (name, description, rules, tags, join policy,
  announcement-only, held first posts).
- Banned people never post, reply, react or join again; a private group vanishes for them.
- A partner group is, on its own node, a private group (the same rules, for the same people);
  it is also shared with the actors of its partner domains (node/partners.py), whose requests
  federation authenticates before it asks whether they are covered. To anyone else it is as
  absent as a private group. `federates` stays false for it: every path that serves or sends
  a public group's documents keeps refusing it, and only the partner paths admit it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, false, or_, true


class Action(StrEnum):
    LIST = "list"
    READ = "read"
    POST = "post"
    REPLY = "reply"
    REACT = "react"
    SEE_MEMBERS = "see_members"
    MODERATE = "moderate"
    JOIN = "join"
    APPOINT_MODERATORS = "appoint_moderators"
    EDIT_SETTINGS = "edit_settings"


@dataclass(frozen=True)
class Viewer:
    member_id: int | None = None
    is_admin: bool = False

    @property
    def signed_in(self) -> bool:
        return self.member_id is not None


ANONYMOUS = Viewer()
# Visibilities readable by anyone, listed on profiles, counted in statistics and federated.
OPEN_VISIBILITIES = ("public",)
PUBLIC = "public"
PRIVATE = "private"
PARTNERS = "partners"
VISIBILITIES = (PUBLIC, PRIVATE, PARTNERS)
ADMIN_ROLE = "admin"


def is_admin(role: str | None) -> bool:
    return role == ADMIN_ROLE


def viewer_for(member_id: int, role: str) -> Viewer:
    """The viewer a signed-in member is: their role decides whether they act as an admin."""
    return Viewer(member_id, is_admin(role))


@dataclass(frozen=True)
class Standing:
    """The viewer's membership row in one group, or none."""

    state: str | None = None
    role: str | None = None

    @property
    def active(self) -> bool:
        return self.state == "active"

    @property
    def banned(self) -> bool:
        return self.state == "banned"

    @property
    def moderates(self) -> bool:
        return self.active and self.role in ("moderator", "owner")


NO_STANDING = Standing()


# The standings in a private group that know it exists, and those that may read it.
KNOWING_STATES = ("invited", "pending", "active")
READING_STATES = ("active",)
# Actions that reveal a group's content: the same rule as reading it (a private group's
# member list too; a public group's is decided by `may` on the row that comes back).
READING_ACTIONS = (Action.LIST, Action.READ, Action.SEE_MEMBERS)


def knows_of(viewer: Viewer, visibility: str, standing: Standing) -> bool:
    """Whether the group's existence may be revealed at all (otherwise: not found)."""
    if visibility in OPEN_VISIBILITIES or viewer.is_admin:
        return True
    return standing.state in KNOWING_STATES


def may(action: Action, viewer: Viewer, visibility: str, standing: Standing) -> bool:
    public = visibility in OPEN_VISIBILITIES
    match action:
        case Action.LIST | Action.READ:
            return public or viewer.is_admin or standing.state in READING_STATES
        case Action.SEE_MEMBERS:
            # Not `public`: who belongs to a health group is its members' business only.
            return viewer.is_admin or standing.state in READING_STATES
        case Action.POST | Action.REPLY | Action.REACT:
            return viewer.signed_in and standing.active
        case Action.MODERATE:
            return viewer.is_admin or standing.moderates
        case Action.APPOINT_MODERATORS:
            return viewer.is_admin or (standing.active and standing.role == "owner")
        case Action.EDIT_SETTINGS:
            # The owner's: what the group is, and how it is run, is theirs to say.
            return standing.active and standing.role == "owner"
        case Action.JOIN:
            if not viewer.signed_in or standing.banned or standing.active:
                return False
            return public or standing.state == "invited"
    raise ValueError(f"unknown action {action!r}")


def visible_in_sql(
    viewer: Viewer,
    need: Action | None,
    visibility: ColumnElement[str],
    state: ColumnElement[str | None],
) -> ColumnElement[bool]:
    """`knows_of`, and for the reading actions `may(need)`, as a SQL condition on a group's
    visibility column and the viewer's membership state column (NULL without a row).

    Queries filter with it, so what the viewer may not know is never loaded: a private group
    then costs the same work, and time, as one that does not exist. Other needs are decided
    by `may` on the row that comes back.
    """
    if viewer.is_admin:
        return true()
    public = visibility.in_(OPEN_VISIBILITIES)
    if viewer.member_id is None:
        return or_(public, false())
    states = READING_STATES if need in READING_ACTIONS else KNOWING_STATES
    return or_(public, state.in_(states))


def shown_by_federation_policy(*hidden: ColumnElement[bool]) -> ColumnElement[bool]:
    """Rows of a server the federation policy refuses (their `federation_hidden` columns,
    kept by node/federation_policy.py) are shown to nobody, admins included, until it is
    allowed again: a SQL condition for the queries that list or load them."""
    return and_(*(column == false() for column in hidden))


def federates(visibility: str) -> bool:
    """Only public groups reach any server: no actor, post, member or count of a private
    group leaves this node, and a partner group's reach only its partners (`shared_with`)."""
    return visibility in OPEN_VISIBILITIES


def shared_with_partners(visibility: str) -> bool:
    """A partner group: its documents and activities go to its partner domains' actors only."""
    return visibility == PARTNERS


def follows_remote_partner_group(visibility: str, is_local: bool) -> bool:
    """A member here may ask to follow another node's partner group (its copy here is shown
    only to its followers here): that node decides, by its partner list, and answers."""
    return not is_local and visibility == PARTNERS


def stays_on_node(visibility: str) -> bool:
    """A private group: nothing of it ever leaves this node, to anyone."""
    return not federates(visibility) and not shared_with_partners(visibility)


def search_engines_may_index(visibility: str, is_local: bool, opened_by_admin: bool) -> bool:
    """Pages are never indexed unless an admin opened one of our public groups (its page and
    threads) to search engines; member profiles never are."""
    return opened_by_admin and is_local and visibility in OPEN_VISIBILITIES


def asks_by_link(visibility: str, join_policy: str) -> bool:
    """A private (or partner) group joined by request has a join link (its secret code) to
    ask with."""
    return visibility in (PRIVATE, PARTNERS) and join_policy == "request"


def may_edit_post(viewer: Viewer, standing: Standing, is_author: bool) -> bool:
    return is_author and standing.active


def may_delete_post(viewer: Viewer, visibility: str, standing: Standing, is_author: bool) -> bool:
    """Authors may always delete what they wrote, even after leaving or a ban: it is their
    health information. Moderators and admins delete as moderation."""
    return is_author or may(Action.MODERATE, viewer, visibility, standing)


def may_post_anonymously(visibility: str, is_local: bool) -> bool:
    """Anonymous posts exist only in this node's private groups, which never federate: no
    other server ever receives a post whose author it would have to hide (a partner group's
    posts reach its partners, so none is anonymous there)."""
    return is_local and stays_on_node(visibility)


def names_author(anonymous: bool) -> bool:
    """Whether pages name a post's author. An anonymous post names nobody, to anyone: its
    author reads "Anonymous member (you)", and the group's moderators learn who wrote it only
    by a reveal, with a reason, that the moderation log records."""
    return not anonymous
