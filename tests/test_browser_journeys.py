"""End-to-end journeys in a real headless Chromium across two real nodes on loopback: a
patient signs up on the charity's node, follows the hospital's group from there and replies to
a thread the hospital's nurse started; the nurse sees the reply and moderates the thread, and
the charity's copy follows. Every step is what a person does: pages, labels and buttons."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from node.storage.models import Member, Membership
from tests.browser import DEFAULT_PASSWORD
from tests.conftest import NodeFactory
from tests.federation_harness import RunningNode, eventually, start_node
from tests.test_browser import CHROMIUM, PHONE, chromium, pytestmark  # noqa: F401

DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture
async def two_nodes(make_node: NodeFactory) -> AsyncIterator[tuple[RunningNode, RunningNode]]:
    hospital = await start_node(make_node, "hospital")
    charity = await start_node(make_node, "charity", host="127.0.0.2")
    try:
        yield hospital, charity
    finally:
        await charity.close()
        await hospital.close()


async def sign_up(page: Any, base: str, username: str) -> None:
    await page.goto(f"{base}/register")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password", exact=True).fill(DEFAULT_PASSWORD)
    await page.get_by_label("Password again").fill(DEFAULT_PASSWORD)
    await page.locator("#f-consent").check()
    async with page.expect_navigation():
        await page.get_by_role("button", name="Create my account").click()
    assert "/register" not in page.url, await page.inner_text("main")


async def main_text(page: Any) -> str:
    text: str = await page.inner_text("main")
    return text


async def shows_after_reload(page: Any, text: str, what: str, where: str = "main") -> None:
    async def shown() -> bool:
        await page.reload()
        return text in await page.inner_text(where)

    await eventually(shown, what, seconds=30, interval=0.2)


async def active_remote_members(node: RunningNode) -> int:
    async with node.node.transaction() as session:
        rows = await session.execute(
            select(Membership.member_id)
            .join(Member, Member.id == Membership.member_id)
            .where(Membership.state == "active", Member.domain != "")
        )
        return len(rows.all())


async def test_sign_up_follow_across_nodes_post_reply_and_moderate(
    two_nodes: tuple[RunningNode, RunningNode],
    chromium: Any,  # noqa: F811
) -> None:
    hospital, charity = two_nodes
    nurse = await (await chromium.new_context(viewport=DESKTOP)).new_page()
    patient = await (await chromium.new_context(viewport=PHONE)).new_page()

    # Given a nurse who signs up on the hospital's node and starts a public group there
    await sign_up(nurse, hospital.base_url, "nurse")
    await nurse.goto(f"{hospital.base_url}/groups/new")
    await nurse.get_by_label("Group name").fill("Type 1 diabetes")
    await nurse.get_by_label("Address", exact=True).fill("t1d")
    await nurse.get_by_label("What the group is for").fill("Living with type 1.")
    async with nurse.expect_navigation():
        await nurse.get_by_role("button", name="Create the group").click()
    assert nurse.url.endswith("/g/t1d"), await main_text(nurse)

    # And a patient who signs up on the charity's node, on a phone
    await sign_up(patient, charity.base_url, "bea")

    # When the patient, on the hospital's group page, asks to follow it from her own server
    await patient.goto(f"{hospital.base_url}/g/t1d")
    address = await patient.get_by_label("This group's address on the fediverse").input_value()
    assert address == f"@t1d@{hospital.domain}"
    await patient.get_by_label("Your address on your own server").fill(f"bea@{charity.domain}")
    async with patient.expect_navigation():
        await patient.get_by_role("button", name="Follow from my server").click()
    async with patient.expect_navigation():
        await patient.get_by_role("link", name=f"Continue to {charity.domain}").click()
    # Then she lands on her own server, signed in, and confirms the follow there
    assert patient.url.startswith(f"{charity.base_url}/"), patient.url
    async with patient.expect_navigation():
        await patient.get_by_role("button", name="Follow", exact=True).click()
    await eventually(lambda: active_remote_members(hospital), "bea's follow accepted")

    # And the nurse starts a thread in the group
    await nurse.goto(f"{hospital.base_url}/g/t1d/new")
    await nurse.get_by_label("Title").fill("Night hypos")
    await nurse.get_by_label("Your post").fill("How do you catch them early?")
    async with nurse.expect_navigation():
        await nurse.get_by_role("button", name="Post the thread").click()
    nurse_thread_url = nurse.url
    assert "Night hypos" in await main_text(nurse)

    # Then the thread reaches the patient's node, and she replies there
    remote_group = f"{charity.base_url}/g/t1d@{hospital.domain}"
    await patient.goto(remote_group)
    await shows_after_reload(patient, "Night hypos", "the thread on the charity's node")
    async with patient.expect_navigation():
        await patient.get_by_role("link", name="Night hypos").click()
    await patient.get_by_label("Your post").fill("A sensor alarm set at 4.5 helps me.")
    async with patient.expect_navigation():
        await patient.get_by_role("button", name="Send reply").click()
    assert "A sensor alarm set at 4.5 helps me." in await main_text(patient)
    patient_thread_url = patient.url.split("#")[0]

    # And the nurse is told of the reply, and reads it on the hospital's node
    await nurse.goto(f"{hospital.base_url}/")
    await shows_after_reload(
        nurse, "Notifications (1 new)", "the notification of the reply", where="header"
    )
    async with nurse.expect_navigation():
        await nurse.get_by_role("link", name="Notifications (1 new)").click()
    told = await main_text(nurse)
    assert "replied to your post" in told and "Night hypos" in told, told
    async with nurse.expect_navigation():
        await nurse.get_by_role("link", name="your post").first.click()
    assert "A sensor alarm" in await main_text(nurse), nurse.url
    assert "A sensor alarm set at 4.5 helps me." in await main_text(nurse)

    # And she finds it again by searching for words of it
    await nurse.goto(f"{hospital.base_url}/")
    await nurse.get_by_label("Search groups, threads and posts").fill("sensor alarms")
    async with nurse.expect_navigation():
        await nurse.get_by_role("button", name="Search").first.click()
    found = await main_text(nurse)
    assert "Night hypos" in found and "sensor" in found.lower(), found
    await nurse.goto(nurse_thread_url)

    # When the nurse locks the thread, with a reason for the log
    await nurse.locator("#f-lock-reason").fill("Answered; see the pinned guide.")
    async with nurse.expect_navigation():
        await nurse.get_by_role("button", name="Lock to replies").click()
    assert "it takes no new replies" in await main_text(nurse)

    # Then the patient's copy is closed to replies too, and offers no reply form
    await patient.goto(patient_thread_url)
    await shows_after_reload(patient, "Closed to replies", "the lock on the charity's node")
    assert await patient.locator("#send-reply").count() == 0
