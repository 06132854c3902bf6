"""The federation health page: per-host delivery state, failed incoming items, retry."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import quote

import pytest
from sqlalchemy import insert, select

from node import members
from node.runtime import NodeContext
from node.storage.models import Delivery, InboxItem, OutboxActivity, RemoteHost
from tests.browser import DEFAULT_PASSWORD
from tests.conftest import BrowserFactory
from tests.federation_harness import eventually


async def seed(node: NodeContext) -> int:
    now = node.clock.now()
    async with node.transaction() as session:
        await members.create_member(
            session, node.passwords, node.settings.limits, username="admin",
            password=DEFAULT_PASSWORD, display_name="Admin", now=now, is_admin=True,
        )  # fmt: skip
        session.add(
            OutboxActivity(
                id="a1", actor_iri="http://localhost:8080/actor", signer="instance",
                type="Reject", body="{}", created_at=now,
            )
        )  # fmt: skip
        await session.flush()
        # Rows as the queue leaves them, written directly (not through their state graphs)
        for inbox, state in (
            ("https://up.example/inbox", "delivered"),
            ("https://down.example/inbox", "queued"),
            ("https://down.example/users/x/inbox", "failed"),
        ):
            await session.execute(
                insert(Delivery).values(
                    activity_id="a1", inbox_url=inbox, state=state, attempts=1,
                    next_attempt_at=now + timedelta(hours=1), created_at=now, updated_at=now,
                    last_error="",
                )
            )  # fmt: skip
        session.add(
            RemoteHost(
                host="down.example", consecutive_failures=7,
                circuit_open_until=now + timedelta(hours=2),
                last_error="HTTP 503: overloaded", last_error_at=now,
            )
        )  # fmt: skip
        like = {
            "id": "https://peer.example/likes/1", "type": "Like",
            "actor": "https://peer.example/u/p", "object": "https://nowhere.example/x",
        }  # fmt: skip
        return (
            await session.execute(
                insert(InboxItem)
                .values(
                    activity_id=like["id"], actor_iri=like["actor"], body=json.dumps(like),
                    state="failed", attempts=3, next_attempt_at=now, received_at=now,
                    error="TimeoutError: the peer was slow",
                )
                .returning(InboxItem.id)
            )
        ).scalar_one()  # fmt: skip


async def test_admins_see_each_hosts_deliveries_and_can_retry_a_failed_item(
    node: NodeContext, browser_factory: BrowserFactory
) -> None:
    item_id = await seed(node)
    admin = await browser_factory()
    await admin.login("admin")
    page = await admin.get("/admin/federation")
    assert page.status == 200
    text = page.text
    assert "down.example" in text and "up.example" in text
    assert "Paused after repeated failures, until" in text  # the failing server, in words
    assert "HTTP 503: overloaded" in text
    assert "TimeoutError: the peer was slow" in text

    # When the admin retries the failed incoming item
    page = await admin.post(f"/admin/federation/inbox/{item_id}/retry")
    assert page.status == 200

    # Then it is processed again (an unknown object: nothing to do, and done)
    async def done() -> bool:
        async with node.transaction() as session:
            item = await session.get(InboxItem, item_id)
            return item is not None and item.state == "done"

    await eventually(done, "the retried item processed")


async def test_the_page_does_not_exist_for_anyone_else(
    node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await seed(node)
    anonymous = await browser_factory()
    assert (await anonymous.get("/admin/federation")).status == 404
    member = await browser_factory()
    await member.register("plain")
    assert (await member.get("/admin/federation")).status == 404
    page = await member.post("/admin/federation/inbox/1/retry")
    assert page.status == 404
    async with node.transaction() as session:
        states = set((await session.execute(select(InboxItem.state))).scalars())
    assert states == {"failed"}


@pytest.mark.parametrize(
    "item_id",
    [
        "99999999999999999999999",  # past any integer column: OverflowError, DataError
        str(2**31),  # past PostgreSQL's integer
        str(2**63),
        "0",
        "00000000000000000000001",
        "\u0661",  # an Arabic-Indic one: a digit to \d and to int(), not to us
    ],
)
async def test_a_malformed_item_id_is_not_found(
    node: NodeContext, browser_factory: BrowserFactory, item_id: str
) -> None:
    await seed(node)
    admin = await browser_factory()
    await admin.login("admin")
    await admin.get("/admin/federation")
    page = await admin.post(f"/admin/federation/inbox/{quote(item_id)}/retry")
    assert page.status == 404, page.text[:300]
    async with node.transaction() as session:
        states = set((await session.execute(select(InboxItem.state))).scalars())
    assert states == {"failed"}
