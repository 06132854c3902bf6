"""The node's identity (its name, description, logo, contact, who runs it) and how people
register, as the configuration file and the admins' settings page set them.

One rule (docs/OPERATIONS.md, "The node's name and registration"): a field saved at
/admin/settings wins; a field never saved there, or saved empty, is the configuration
file's value, else the built-in default. The logo is only ever set on the page.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from node import ids
from node.config import (
    IDENTITY_CONTACT_MAX,
    IDENTITY_DESCRIPTION_MAX,
    IDENTITY_NAME_MAX,
    IDENTITY_OPERATOR_MAX,
    IdentityDefaults,
    RegistrationMode,
)
from node.errors import Invalid
from node.modlog import ModAction, log_action
from node.storage.models import NodeIdentityRow
from node.text import neutralise

ROW_ID = 1
LOGO_MAX = 200 * 1024  # below the form body cap (256 KB), so the form's other fields fit too
# The first bytes of each accepted image type. SVG is never accepted: it can carry scripts.
_LOGO_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)
LOGO_TYPES = ("image/png", "image/jpeg", "image/webp")
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
FINGERPRINT_LENGTH = 16


@dataclass(frozen=True)
class NodeIdentity:
    """What the node shows of itself, every field resolved (page, else file, else default)."""

    name: str
    description: str
    contact: str
    operator: str
    registration: RegistrationMode
    logo_path: str | None = None  # the fingerprinted path of the logo, None without one
    logo_type: str | None = None

    @classmethod
    def of_defaults(cls, defaults: IdentityDefaults) -> NodeIdentity:
        return cls(
            defaults.name,
            defaults.description,
            defaults.contact,
            defaults.operator,
            defaults.registration,
        )


def logo_type_of(data: bytes) -> str | None:
    """The media type the image's first bytes show (PNG, JPEG or WebP), else None."""
    for signature, media_type in _LOGO_SIGNATURES:
        if data.startswith(signature):
            return media_type
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def logo_path(fingerprint: str, media_type: str) -> str:
    return ids.logo_path(f"{fingerprint}.{_EXTENSIONS[media_type]}")


async def load_identity(session: AsyncSession, defaults: IdentityDefaults) -> NodeIdentity:
    """The identity as it stands: the admins' values over the configuration's."""
    found = await session.execute(
        select(
            NodeIdentityRow.name,
            NodeIdentityRow.description,
            NodeIdentityRow.contact,
            NodeIdentityRow.operator,
            NodeIdentityRow.registration,
            NodeIdentityRow.logo_type,
            NodeIdentityRow.logo_fingerprint,
        ).where(NodeIdentityRow.id == ROW_ID)
    )
    row = found.one_or_none()
    if row is None:
        return NodeIdentity.of_defaults(defaults)
    has_logo = bool(row.logo_fingerprint) and row.logo_type in LOGO_TYPES
    logo = logo_path(row.logo_fingerprint, row.logo_type) if has_logo else None
    return NodeIdentity(
        name=row.name or defaults.name,
        description=row.description or defaults.description,
        contact=row.contact or defaults.contact,
        operator=row.operator or defaults.operator,
        registration=(
            RegistrationMode(row.registration) if row.registration else defaults.registration
        ),
        logo_path=logo,
        logo_type=row.logo_type if has_logo else None,
    )


async def load_logo(session: AsyncSession, name: str) -> tuple[bytes, str] | None:
    """The logo's bytes and media type when `name` (fingerprint.extension) is the current
    logo's; an old or made-up name finds nothing."""
    row = await session.get(NodeIdentityRow, ROW_ID)
    if row is None or row.logo is None or not row.logo_fingerprint or not row.logo_type:
        return None
    if name != f"{row.logo_fingerprint}.{_EXTENSIONS.get(row.logo_type, '')}":
        return None
    return row.logo, row.logo_type


@dataclass(frozen=True)
class IdentityChange:
    """What an admin sent from the settings page; empty text: the configuration's value."""

    name: str
    description: str
    contact: str
    operator: str
    registration: str
    logo: bytes | None = None  # a new logo, None: keep the one there is
    remove_logo: bool = False


def _checked(change: IdentityChange) -> tuple[dict[str, str | None], RegistrationMode | None]:
    problems: dict[str, str] = {}
    texts: dict[str, str | None] = {}
    for field_name, maximum, label in (
        ("name", IDENTITY_NAME_MAX, "The name"),
        ("description", IDENTITY_DESCRIPTION_MAX, "The description"),
        ("contact", IDENTITY_CONTACT_MAX, "The contact"),
        ("operator", IDENTITY_OPERATOR_MAX, "Who runs the node"),
    ):
        text = neutralise(getattr(change, field_name), name=field_name != "description").strip()
        if len(text) > maximum:
            problems[field_name] = f"{label} is at most {maximum} characters."
        texts[field_name] = text or None
    registration: RegistrationMode | None = None
    if change.registration:
        try:
            registration = RegistrationMode(change.registration)
        except ValueError:
            problems["registration"] = "Choose open, by approval, or closed."
    if change.logo is not None:
        if len(change.logo) > LOGO_MAX:
            problems["logo"] = f"The logo is at most {LOGO_MAX // 1024} KB."
        elif logo_type_of(change.logo) is None:
            problems["logo"] = "The logo must be a PNG, JPEG or WebP image (not SVG)."
    if problems:
        raise Invalid(problems)
    return texts, registration


async def save_identity(
    session: AsyncSession,
    change: IdentityChange,
    *,
    now: datetime,
    actor_label: str,
    actor_id: int,
) -> None:
    """Store what an admin set, and say so in the audit log. The caller checked who acts."""
    texts, registration = _checked(change)
    row = await session.get(NodeIdentityRow, ROW_ID, with_for_update=True)
    if row is None:
        row = NodeIdentityRow(id=ROW_ID)
        session.add(row)
    row.name, row.description = texts["name"], texts["description"]
    row.contact, row.operator = texts["contact"], texts["operator"]
    row.registration = registration.value if registration else None
    if change.logo is not None:
        row.logo = change.logo
        row.logo_type = logo_type_of(change.logo)
        row.logo_fingerprint = hashlib.sha256(change.logo).hexdigest()[:FINGERPRINT_LENGTH]
    elif change.remove_logo:
        row.logo = row.logo_type = row.logo_fingerprint = None
    row.updated_at = now
    await session.flush()
    what = ["registration " + (registration.value if registration else "as configured")]
    if change.logo is not None:
        what.append("new logo")
    elif change.remove_logo:
        what.append("logo removed")
    await log_action(
        session,
        action=ModAction.NODE_SETTINGS,
        reason="changed the node's name and settings: " + ", ".join(what),
        now=now,
        actor_label=actor_label,
        actor_id=actor_id,
    )


class IdentityCache:
    """The identity as each process last read it, read again at most every `fresh_for`:
    every page shows it, and it changes rarely. The process that saves invalidates its own
    copy at once; the others see the change within `fresh_for`."""

    def __init__(self, defaults: IdentityDefaults, fresh_for: timedelta) -> None:
        self.defaults = defaults
        self.fresh_for = fresh_for
        self.current = NodeIdentity.of_defaults(defaults)
        self._read_at: datetime | None = None

    async def get(self, session: AsyncSession, now: datetime) -> NodeIdentity:
        if self._read_at is None or not now - self.fresh_for < self._read_at <= now:
            self.current = await load_identity(session, self.defaults)
            self._read_at = now
        return self.current

    def invalidate(self) -> None:
        self._read_at = None
