"""node/policy.py as one explicit table, written from its module docstring.

Nothing here recomputes the policy: every expected answer is spelled out, so a change to the
rules has to change a line of this table on purpose.
"""

from __future__ import annotations

import pytest

from node.policy import (
    ANONYMOUS,
    NO_STANDING,
    Action,
    Standing,
    Viewer,
    knows_of,
    may,
    may_delete_post,
    may_edit_post,
)

# The people of the matrix: who they are on the node, and their row in the group (if any).
PEOPLE: dict[str, tuple[Viewer, Standing]] = {
    "anonymous": (ANONYMOUS, NO_STANDING),
    "non_member": (Viewer(member_id=1), NO_STANDING),
    "pending": (Viewer(member_id=2), Standing("pending", "member")),
    "invited": (Viewer(member_id=3), Standing("invited", "member")),
    "member": (Viewer(member_id=4), Standing("active", "member")),
    "moderator": (Viewer(member_id=5), Standing("active", "moderator")),
    "owner": (Viewer(member_id=6), Standing("active", "owner")),
    "banned": (Viewer(member_id=7), Standing("banned", "member")),
    "admin": (Viewer(member_id=8, is_admin=True), NO_STANDING),
}

Y, N = True, False
COLUMNS = (
    Action.LIST,
    Action.READ,
    Action.POST,
    Action.REPLY,
    Action.REACT,
    Action.SEE_MEMBERS,
    Action.MODERATE,
    Action.JOIN,
    "knows_of",
)

# fmt: off
MATRIX: dict[tuple[str, str], tuple[bool, ...]] = {
    #                          LIST READ POST REPLY REACT SEE_M  MOD  JOIN KNOWS_OF
    # A public group: readable and listed to anyone, its members listed only to its members
    # and admins; only active members post, reply and react; any signed-in person who is not
    # in it and not banned joins.
    ("public", "anonymous"):  (Y,   Y,   N,   N,    N,    N,     N,   N,   Y),
    ("public", "non_member"): (Y,   Y,   N,   N,    N,    N,     N,   Y,   Y),
    ("public", "pending"):    (Y,   Y,   N,   N,    N,    N,     N,   Y,   Y),
    ("public", "invited"):    (Y,   Y,   N,   N,    N,    N,     N,   Y,   Y),
    ("public", "member"):     (Y,   Y,   Y,   Y,    Y,    Y,     N,   N,   Y),
    ("public", "moderator"):  (Y,   Y,   Y,   Y,    Y,    Y,     Y,   N,   Y),
    ("public", "owner"):      (Y,   Y,   Y,   Y,    Y,    Y,     Y,   N,   Y),
    ("public", "banned"):     (Y,   Y,   N,   N,    N,    N,     N,   N,   Y),
    ("public", "admin"):      (Y,   Y,   N,   N,    N,    Y,     Y,   Y,   Y),
    # A private group: exists for its active members, invited and pending people (who know its
    # name, nothing else) and admins (who read and moderate, but do not post). Invited people
    # join by accepting; everyone else gets "not found".
    ("private", "anonymous"):  (N,  N,   N,   N,    N,    N,     N,   N,   N),
    ("private", "non_member"): (N,  N,   N,   N,    N,    N,     N,   N,   N),
    ("private", "pending"):    (N,  N,   N,   N,    N,    N,     N,   N,   Y),
    ("private", "invited"):    (N,  N,   N,   N,    N,    N,     N,   Y,   Y),
    ("private", "member"):     (Y,  Y,   Y,   Y,    Y,    Y,     N,   N,   Y),
    ("private", "moderator"):  (Y,  Y,   Y,   Y,    Y,    Y,     Y,   N,   Y),
    ("private", "owner"):      (Y,  Y,   Y,   Y,    Y,    Y,     Y,   N,   Y),
    ("private", "banned"):     (N,  N,   N,   N,    N,    N,     N,   N,   N),
    ("private", "admin"):      (Y,  Y,   N,   N,    N,    Y,     Y,   N,   Y),
}
# fmt: on


def _cases() -> list[pytest.param]:
    cases = []
    for (visibility, person), answers in MATRIX.items():
        for column, expected in zip(COLUMNS, answers, strict=True):
            cases.append(
                pytest.param(
                    visibility, person, column, expected, id=f"{visibility}-{person}-{column}"
                )
            )
    return cases


def test_the_matrix_covers_every_person_visibility_and_action() -> None:
    assert set(MATRIX) == {(v, p) for v in ("public", "private") for p in PEOPLE}
    assert set(COLUMNS) == (set(Action) - {Action.APPOINT_MODERATORS, Action.EDIT_SETTINGS}) | {
        "knows_of"
    }


@pytest.mark.parametrize(("visibility", "person", "column", "expected"), _cases())
def test_policy_matrix(visibility: str, person: str, column: str, expected: bool) -> None:
    viewer, standing = PEOPLE[person]
    if column == "knows_of":
        answer = knows_of(viewer, visibility, standing)
    else:
        answer = may(Action(column), viewer, visibility, standing)
    assert answer is expected


# Appointing moderators is the owner's and the admins' alone, in either kind of group.
APPOINTERS = {
    "anonymous": N,
    "non_member": N,
    "pending": N,
    "invited": N,
    "member": N,
    "moderator": N,
    "owner": Y,
    "banned": N,
    "admin": Y,
}


@pytest.mark.parametrize("visibility", ["public", "private"])
@pytest.mark.parametrize(("person", "expected"), list(APPOINTERS.items()))
def test_who_appoints_moderators(visibility: str, person: str, expected: bool) -> None:
    viewer, standing = PEOPLE[person]
    assert may(Action.APPOINT_MODERATORS, viewer, visibility, standing) is expected


# A group's settings are its owner's alone (not the admins': the owner says what it is).
SETTINGS_EDITORS = APPOINTERS | {"admin": N}


@pytest.mark.parametrize("visibility", ["public", "private"])
@pytest.mark.parametrize(("person", "expected"), list(SETTINGS_EDITORS.items()))
def test_who_edits_the_settings(visibility: str, person: str, expected: bool) -> None:
    viewer, standing = PEOPLE[person]
    assert may(Action.EDIT_SETTINGS, viewer, visibility, standing) is expected


@pytest.mark.parametrize("visibility", ["public", "private"])
def test_a_banned_moderator_neither_moderates_nor_posts(visibility: str) -> None:
    viewer, standing = Viewer(member_id=9), Standing("banned", "moderator")
    assert not may(Action.MODERATE, viewer, visibility, standing)
    assert not may(Action.POST, viewer, visibility, standing)
    assert not may(Action.JOIN, viewer, visibility, standing)


@pytest.mark.parametrize("visibility", ["public", "private"])
def test_an_admin_who_is_an_active_member_posts_there(visibility: str) -> None:
    admin = Viewer(member_id=10, is_admin=True)
    active = Standing("active", "member")
    assert may(Action.POST, admin, visibility, active)
    assert may(Action.REPLY, admin, visibility, active)
    assert may(Action.REACT, admin, visibility, active)
    assert not may(Action.JOIN, admin, visibility, active)


def test_an_admin_banned_from_a_group_still_moderates_but_never_posts() -> None:
    admin = Viewer(member_id=11, is_admin=True)
    banned = Standing("banned", "member")
    assert may(Action.MODERATE, admin, "private", banned)
    assert knows_of(admin, "private", banned)
    assert not may(Action.POST, admin, "public", banned)
    assert not may(Action.JOIN, admin, "public", banned)


def test_an_unknown_action_is_an_error_not_a_silent_no() -> None:
    with pytest.raises(ValueError, match="unknown action"):
        may("delete_everything", Viewer(member_id=1), "public", NO_STANDING)  # type: ignore[arg-type]


# may_edit_post: only the author, and only while an active member of the group.
EDIT: list[tuple[str, bool, bool]] = [
    # person, is_author, expected
    ("member", Y, Y),
    ("moderator", Y, Y),
    ("owner", Y, Y),
    ("non_member", Y, N),  # the author left the group
    ("banned", Y, N),
    ("pending", Y, N),
    ("invited", Y, N),
    ("member", N, N),
    ("moderator", N, N),
    ("owner", N, N),
    ("admin", N, N),
    ("anonymous", N, N),
]


@pytest.mark.parametrize(("person", "is_author", "expected"), EDIT)
def test_may_edit_post(person: str, is_author: bool, expected: bool) -> None:
    viewer, standing = PEOPLE[person]
    assert may_edit_post(viewer, standing, is_author) is expected


# may_delete_post: authors always (even after leaving or a ban); moderators, owners and admins
# as moderation; nobody else.
DELETE: list[tuple[str, bool, bool]] = [
    # person, is_author, expected
    ("member", Y, Y),
    ("non_member", Y, Y),  # the author left the group
    ("banned", Y, Y),
    ("pending", Y, Y),
    ("moderator", N, Y),
    ("owner", N, Y),
    ("admin", N, Y),
    ("member", N, N),
    ("non_member", N, N),
    ("pending", N, N),
    ("invited", N, N),
    ("banned", N, N),
    ("anonymous", N, N),
]


@pytest.mark.parametrize("visibility", ["public", "private"])
@pytest.mark.parametrize(("person", "is_author", "expected"), DELETE)
def test_may_delete_post(visibility: str, person: str, is_author: bool, expected: bool) -> None:
    viewer, standing = PEOPLE[person]
    assert may_delete_post(viewer, visibility, standing, is_author) is expected
