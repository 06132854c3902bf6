"""Frozen node settings: the public domain, where data lives, and the documented limits."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DOMAIN = "localhost:8080"


def split_host_port(domain: str) -> tuple[str, str | None]:
    """Split `host[:port]`, `[v6]` or `[v6]:port` into the host and the port text."""
    if domain.startswith("["):
        host, _, rest = domain[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    host, sep, port = domain.rpartition(":")
    if sep and port.isdigit():
        return host, port
    return domain, None


def is_loopback_domain(domain: str) -> bool:
    """A loopback domain marks a development or test node: http IRIs, loopback peers allowed."""
    host, _ = split_host_port(domain.strip().lower())
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_HOST_NAME = re.compile(
    r"(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)
_DOMAIN = re.compile(r"(?P<host>\[[0-9a-f:.]+\]|[^:\[\]]+)(?::(?P<port>[0-9]{1,5}))?")


def validate_domain(domain: str) -> str:
    """Return the normalised domain or raise ValueError with a one-line reason."""
    normalised = domain.strip().lower()
    reason = f"invalid domain {domain!r}: give a host name with an optional :port"
    match = _DOMAIN.fullmatch(normalised)
    if not match:
        raise ValueError(reason)
    host, port = match.group("host"), match.group("port")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(reason) from None
    elif not _HOST_NAME.fullmatch(host):
        raise ValueError(reason)
    if port is not None and not (0 < int(port) < 65536):
        raise ValueError(f"invalid domain {domain!r}: port out of range")
    return normalised


@dataclass(frozen=True)
class Limits:
    """Documented input limits (README, "Limits")."""

    username_max: int = 30
    display_name_max: int = 60
    bio_max: int = 2000
    password_min: int = 8
    password_max: int = 1000
    group_name_max: int = 80
    group_description_max: int = 2000
    group_rules_max: int = 5000
    condition_tags_max: int = 10
    condition_tag_max: int = 40
    title_max: int = 200
    post_max: int = 20000
    content_warning_max: int = 200
    form_body_max: int = 256 * 1024


@dataclass(frozen=True)
class PasswordCost:
    """argon2id parameters; tests use a cheaper profile than production."""

    time_cost: int = 3
    memory_cost_kib: int = 65536
    parallelism: int = 4


@dataclass(frozen=True)
class Settings:
    domain: str = DEFAULT_DOMAIN
    data_dir: Path = Path("data")
    database_url: str | None = None
    limits: Limits = field(default_factory=Limits)
    password_cost: PasswordCost = field(default_factory=PasswordCost)
    session_days: int = 30
    login_window_minutes: int = 15
    login_failures_per_account: int = 5
    login_failures_per_address: int = 20
    consent_policy_version: str = "2026-11"
    # Servers whose activities and signed fetches are refused, before any key is fetched.
    blocked_domains: frozenset[str] = frozenset()

    @property
    def is_development(self) -> bool:
        return is_loopback_domain(self.domain)

    @property
    def scheme(self) -> str:
        return "http" if self.is_development else "https"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.domain}"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'healthnode.sqlite3').resolve()}"
