"""The declared state graphs: illegal transitions raise wherever a state is written, the
database refuses states the graph does not name, and the documentation shows the code."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from federation.queue import InboxQueue
from federation.service import Federation
from node import groups, members, membership, remote
from node.membership import remove_membership
from node.policy import Viewer
from node.runtime import NodeContext
from node.storage.models import Delivery, InboxItem, Membership, OutboxActivity
from node.storage.states import (
    DELIVERY,
    GRAPHS,
    INBOX_ITEM,
    MEMBERSHIP,
    DeliveryState,
    IllegalTransition,
    InboxItemState,
    markdown,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "FEDERATION.md"


def test_the_documentation_draws_each_graph_from_its_declaration() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for graph in GRAPHS:
        assert markdown(graph) in text, (
            f"docs/FEDERATION.md does not show the {graph.name} graph as declared; "
            f"paste the output of `python -m node.storage.states`:\n{markdown(graph)}"
        )
    shown = re.findall(r"<!-- state graph: ([a-z ]+) -->", text)
    assert sorted(shown) == sorted(graph.name for graph in GRAPHS)


def test_a_graph_allows_only_its_transitions() -> None:
    assert DELIVERY.check(None, "queued") == "queued"
    assert DELIVERY.check("in_flight", DeliveryState.DELIVERED) == "delivered"
    assert DELIVERY.check("queued", "queued") == "queued"  # rescheduled, same state
    for old, new in [(None, "delivered"), ("delivered", "queued"), ("failed", "in_flight")]:
        with pytest.raises(IllegalTransition, match="is not a transition"):
            DELIVERY.check(old, new)
    with pytest.raises(IllegalTransition):
        DELIVERY.check("queued", "lost")  # not a state at all
    assert INBOX_ITEM.check("failed", "queued") == "queued"  # an admin's retry
    with pytest.raises(IllegalTransition):
        INBOX_ITEM.check("done", "queued")
    with pytest.raises(IllegalTransition):
        MEMBERSHIP.check("banned", "active")  # a ban is lifted by removing the row


def test_a_set_based_update_refuses_an_illegal_pair_before_any_sql() -> None:
    with pytest.raises(IllegalTransition):
        DELIVERY.update(Delivery, [DeliveryState.DELIVERED], DeliveryState.QUEUED)
    statement = DELIVERY.update(Delivery, [DeliveryState.IN_FLIGHT], DeliveryState.QUEUED)
    compiled = str(statement.compile(compile_kwargs={"literal_binds": True}))
    assert "deliveries.state IN ('in_flight')" in compiled


def test_the_check_constraints_are_generated_from_the_graphs() -> None:
    for model, graph in ((Delivery, DELIVERY), (InboxItem, INBOX_ITEM), (Membership, MEMBERSHIP)):
        checks = {
            str(constraint.sqltext)
            for constraint in model.__table__.constraints
            if getattr(constraint, "sqltext", None) is not None
        }
        assert graph.check_constraint() in checks


async def test_orm_writes_of_a_state_go_through_its_graph(node: NodeContext) -> None:
    now = node.clock.now()
    async with node.transaction() as session:
        owner = await members.create_member(
            session, node.passwords, node.settings.limits, username="owner",
            password="correct horse battery", display_name="Owner", now=now,
        )  # fmt: skip
        group = await groups.create_group(
            session, node.settings.limits, owner_id=owner.id, slug="t1d",
            name="Type 1 diabetes", now=now,
        )  # fmt: skip
        row = await session.get(Membership, (group.id, owner.id))
        assert row is not None and row.state == "active"
        row.state = "banned"
        with pytest.raises(IllegalTransition):
            row.state = "pending"  # banned -> pending is no transition
        assert row.state == "banned"  # the refused write changed nothing
        with pytest.raises(IllegalTransition):
            InboxItem(
                activity_id="https://x.example/1", actor_iri="https://x.example/a", body="{}",
                state=InboxItemState.DONE, next_attempt_at=now, received_at=now,
            )  # fmt: skip
        await remove_membership(session, row)
        assert await session.get(Membership, (group.id, owner.id)) is None


async def test_the_database_refuses_a_state_no_graph_names(node: NodeContext) -> None:
    now = node.clock.now()
    with pytest.raises(IntegrityError):
        async with node.transaction() as session:
            session.add(
                OutboxActivity(
                    id="a1", actor_iri="http://x/actor", signer="instance", type="Follow",
                    body="{}", created_at=now,
                )
            )  # fmt: skip
            await session.flush()
            await session.execute(
                insert(Delivery).values(
                    activity_id="a1", inbox_url="https://x.example/inbox", state="lost",
                    attempts=0, next_attempt_at=now, created_at=now, updated_at=now,
                    last_error="",
                )
            )  # fmt: skip


async def test_the_inbox_queue_prunes_its_own_finished_items(node: NodeContext) -> None:
    # Given a processed item, a failed one and a queued one, all received now
    now = node.clock.now()
    async with node.transaction() as session:
        for number, state in enumerate(("done", "failed", "queued")):
            await session.execute(
                insert(InboxItem).values(
                    activity_id=f"https://x.example/{number}", actor_iri="https://x.example/a",
                    body="{}", state=state, attempts=0,
                    next_attempt_at=now + timedelta(days=365), received_at=now, error="",
                )
            )  # fmt: skip
    federation = Federation(node)
    queue: InboxQueue = federation.inbox_queue
    try:
        # When the inbox worker drains eight days later, and again 23 days after that
        node.clock.advance(timedelta(days=8))  # type: ignore[attr-defined]
        await queue.drain()

        async def states() -> list[str]:
            async with node.transaction() as session:
                found = await session.execute(select(InboxItem.state).order_by(InboxItem.id))
                return list(found.scalars())

        # Then the processed item is gone after its 7 days, the failed one kept for 30
        assert await states() == ["failed", "queued"]
        node.clock.advance(timedelta(days=23))  # type: ignore[attr-defined]
        await queue.drain()
        assert await states() == ["queued"]
    finally:
        await federation.close()


async def test_an_invitation_to_a_remote_group_is_taken_up_by_following_it(
    node: NodeContext,
) -> None:
    # Given an admin invited a member to a group on another server (admins moderate all)
    now = node.clock.now()
    async with node.transaction() as session:
        admin = await members.create_member(
            session, node.passwords, node.settings.limits, username="root",
            password="correct horse battery", display_name="Root", now=now, is_admin=True,
        )  # fmt: skip
        ann = await members.create_member(
            session, node.passwords, node.settings.limits, username="ann",
            password="correct horse battery", display_name="Ann", now=now,
        )  # fmt: skip
        group = await remote.upsert_remote_group(
            session,
            remote.RemoteActorFacts(
                iri="https://lemmy.example/c/t1d", username="t1d", domain="lemmy.example",
                display_name="T1D", summary="", inbox="https://lemmy.example/c/t1d/inbox",
                shared_inbox=None, profile_url=None,
            ),
            now,
        )  # fmt: skip
        address = f"{group.slug}@{group.domain}"
        admin_view = await groups.view_group(session, address, Viewer(admin.id, True))
        await membership.invite(session, admin_view, "ann", now)

    # When she joins it
    async with node.transaction() as session:
        view = await groups.view_group(session, address, Viewer(ann.id))
        row = await membership.join(session, view, now)

    # Then her membership waits for the group's answer to her Follow
    assert row.state == "pending"
