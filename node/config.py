"""Frozen node settings: the public domain, where data lives, and the documented limits."""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
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
class Throttle:
    """Attempts allowed under one key (an account from an address, an address): `free`
    attempts, then each further one only after a delay that doubles, up to `longest_delay`.
    A key left alone for `forget_after` starts afresh."""

    free: int
    first_delay: timedelta = timedelta(minutes=1)
    longest_delay: timedelta = timedelta(hours=1)
    forget_after: timedelta = timedelta(days=1)

    def delay_after(self, attempts: int) -> timedelta:
        if attempts < self.free:
            return timedelta(0)
        doublings = min(attempts - self.free, 20)  # 2**20 minutes is past any sane cap
        return min(self.first_delay * 2**doublings, self.longest_delay)


@dataclass(frozen=True)
class Rate:
    """About `count` actions per `period`. Counted in the database (posts, reports, follow
    requests), it is a window that opens with the first action: the next action past `count`
    waits until `period` after that first. For inbox POSTs, counted in memory, it is a bucket
    of `count` tokens that refills at `count` per `period`."""

    count: int
    period: timedelta


def describe_period(period: timedelta) -> str:
    seconds = int(period.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            amount = seconds // size
            return f"{amount} {unit}" if amount == 1 else f"{amount} {unit}s"
    return f"{seconds} seconds"


@dataclass(frozen=True)
class RateLimits:
    """How often anyone may do what (README "Rate limits", docs/POLICY.md, docs/FEDERATION.md).
    None turns a rate off; the throttles on guessing cannot be turned off."""

    # Sign-in guesses are throttled per (account, address) and per address, never per account
    # alone: a stranger's wrong passwords must not lock the owner out (docs/POLICY.md).
    sign_in_per_account_address: Throttle = Throttle(free=5)
    sign_in_per_address: Throttle = Throttle(free=20)
    registrations_per_address: Throttle = Throttle(free=5)
    # Password recovery by email asked from one address (the answer never says whether the
    # account exists, so the 429 tells nothing either).
    recoveries_per_address: Throttle = Throttle(free=5)
    # New threads and replies written here, per member; not for a group's moderators in
    # their group, nor for the node's admins.
    posts_per_member: Rate | None = Rate(30, timedelta(minutes=10))
    # Reports filed here, per member, moderators and admins included.
    reports_per_member: Rate | None = Rate(20, timedelta(hours=1))
    # Inbox POSTs per host named by the signature's keyId, per process, before any key fetch.
    inbox_per_host: Rate | None = Rate(300, timedelta(minutes=1))
    # Follow activities received from actors of one host, across processes.
    follows_per_host: Rate | None = Rate(60, timedelta(hours=1))
    # "Follow from your own server" asks, per client address: each makes this node fetch the
    # WebFinger of a server the visitor names, signed in or not.
    home_follows_per_address: Rate | None = Rate(10, timedelta(minutes=10))

    @property
    def counters_forget_after(self) -> timedelta:
        """How long a counter row must outlive its last use for every limit to hold."""
        periods = [
            throttle.forget_after
            for throttle in (
                self.sign_in_per_account_address,
                self.sign_in_per_address,
                self.registrations_per_address,
                self.recoveries_per_address,
            )
        ]
        periods += [
            rate.period
            for rate in (
                self.posts_per_member,
                self.reports_per_member,
                self.follows_per_host,
                self.home_follows_per_address,
            )
            if rate is not None
        ]
        return max(periods)


DEFAULT_RATE_LIMITS = RateLimits()
_PERIOD = r"[0-9]{1,6}[smhd]"
_THROTTLE = re.compile(
    rf"(?P<free>[0-9]{{1,4}})(?:\s*,\s*(?P<first>{_PERIOD})\s*,\s*(?P<longest>{_PERIOD}))?"
)
_RATE = re.compile(rf"(?P<count>[0-9]{{1,7}})\s*/\s*(?P<period>{_PERIOD})")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
PERIOD_MAX = timedelta(days=7)


def parse_period(text: str) -> timedelta:
    period = timedelta(seconds=int(text[:-1]) * _UNITS[text[-1]])
    if not timedelta(seconds=1) <= period <= PERIOD_MAX:
        raise ValueError(f"{text!r} is not between 1s and 7d")
    return period


# Client addresses are kept for abuse control only (the sign-in and registration throttles),
# then purged (node/addresses.py). Never shorter than a throttle remembers an address, or
# the purge would lift a throttle early.
ADDRESS_RETENTION_DEFAULT = timedelta(days=7)
ADDRESS_RETENTION_MIN = timedelta(days=1)
ADDRESS_RETENTION_MAX = timedelta(days=90)
_RETENTION = re.compile(r"[0-9]{1,6}[hd]")


def parse_address_retention(text: str) -> timedelta:
    """How long client addresses are kept: hours or days such as `7d` or `36h`, from 1d to 90d."""
    text = text.strip().lower()
    if not _RETENTION.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration such as 7d or 36h")
    retention = timedelta(seconds=int(text[:-1]) * _UNITS[text[-1]])
    if not ADDRESS_RETENTION_MIN <= retention <= ADDRESS_RETENTION_MAX:
        raise ValueError(f"{text!r} is not between 1d and 90d")
    return retention


def parse_rate(text: str) -> Rate | None:
    """`COUNT/PERIOD` such as `30/10m` (units s, m, h, d), or `off`."""
    text = text.strip().lower()
    if text == "off":
        return None
    match = _RATE.fullmatch(text)
    if not match or int(match.group("count")) == 0:
        raise ValueError(f"{text!r} is not COUNT/PERIOD such as 30/10m (s, m, h, d), or off")
    return Rate(int(match.group("count")), parse_period(match.group("period")))


def parse_throttle(text: str) -> Throttle:
    """`FREE` tries, or `FREE,FIRST_DELAY,LONGEST_DELAY` such as `5,1m,1h`."""
    text = text.strip().lower()
    match = _THROTTLE.fullmatch(text)
    if not match or int(match.group("free")) == 0:
        raise ValueError(f"{text!r} is not FREE or FREE,FIRST_DELAY,LONGEST_DELAY such as 5,1m,1h")
    if match.group("first") is None:
        return Throttle(free=int(match.group("free")))
    first, longest = parse_period(match.group("first")), parse_period(match.group("longest"))
    throttle = Throttle(free=int(match.group("free")), first_delay=first, longest_delay=longest)
    if not first <= longest <= throttle.forget_after:
        raise ValueError(f"{text!r}: the delays must grow, up to {throttle.forget_after.days} day")
    return throttle


def parse_rate_limits(
    environ: Mapping[str, str], prefix: str, label: Callable[[str], str] = str
) -> RateLimits:
    """RateLimits with each field named `prefix` + its name in capitals (in `environ`)
    changed; ValueError names the first variable that is wrong, or unknown (a misspelling
    must not leave a limit silently at its default). `label` names a variable in a reason
    (the configuration file's key for a value read from it)."""
    changes: dict[str, Throttle | Rate | None] = {}
    for field_ in fields(RateLimits):
        variable = prefix + field_.name.upper()
        if variable not in environ:
            continue
        default = getattr(DEFAULT_RATE_LIMITS, field_.name)
        parse = parse_throttle if isinstance(default, Throttle) else parse_rate
        try:
            changes[field_.name] = parse(environ[variable])
        except ValueError as error:
            raise ValueError(f"{label(variable)}: {error}") from None
    known = {prefix + field_.name.upper() for field_ in fields(RateLimits)}
    unknown = sorted(name for name in environ if name.startswith(prefix) and name not in known)
    if unknown:
        raise ValueError(f"{label(unknown[0])} is not a rate limit; see README, Rate limits")
    return RateLimits(**changes)  # type: ignore[arg-type]


def format_period(period: timedelta) -> str:
    """The shortest `N` + unit (s, m, h, d) text that parse_period reads back as `period`."""
    seconds = int(period.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def format_rate(rate: Rate | None) -> str:
    return "off" if rate is None else f"{rate.count}/{format_period(rate.period)}"


def format_throttle(throttle: Throttle) -> str:
    first, longest = format_period(throttle.first_delay), format_period(throttle.longest_delay)
    return f"{throttle.free},{first},{longest}"


def format_address_retention(retention: timedelta) -> str:
    hours = int(retention.total_seconds()) // 3600
    return f"{hours // 24}d" if hours % 24 == 0 else f"{hours}h"


@dataclass(frozen=True)
class Limits:
    """Documented limits (README, "Limits"): of input, and of how often (`rates`)."""

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
    rates: RateLimits = field(default_factory=RateLimits)


@dataclass(frozen=True)
class PasswordCost:
    """argon2id parameters; tests use a cheaper profile than production."""

    time_cost: int = 3
    memory_cost_kib: int = 65536
    parallelism: int = 4
    # Hashes computed at once, in threads beside the event loop; more wait their turn.
    concurrent_hashes: int = 2


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated addresses or CIDR networks; ValueError names the first bad one."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"{item!r} is not an address or a network such as 10.0.0.0/8"
            ) from None
    return tuple(networks)


class SmtpTls(enum.StrEnum):
    """How the connection to the SMTP server is protected."""

    NONE = "none"  # plain text: only for a server on the same host or a test
    STARTTLS = "starttls"  # plain connection upgraded with STARTTLS (usually port 587)
    TLS = "tls"  # TLS from the first byte (usually port 465)


@dataclass(frozen=True)
class SmtpSettings:
    """The operator's mail server (README, "Email (optional)"). Without it members cannot
    add an email address and nothing is ever sent."""

    host: str
    from_address: str
    port: int = 587
    tls: SmtpTls = SmtpTls.STARTTLS
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    # One send may take this long (connect, TLS, authenticate, transfer) before it is given up.
    timeout_seconds: float = 30.0


SMTP_VARIABLES = ("HOST", "PORT", "TLS", "USER", "PASSWORD", "FROM", "TIMEOUT_SECONDS")
SMTP_TIMEOUT_MAX = 600.0


def parse_smtp(
    environ: Mapping[str, str], prefix: str, label: Callable[[str], str] = str
) -> SmtpSettings | None:
    """SmtpSettings from `prefix` + HOST, PORT, TLS (none, starttls, tls), USER, PASSWORD,
    FROM and TIMEOUT_SECONDS in `environ`; None when HOST is not set. ValueError names the
    first variable that is wrong or unknown; `label` names a variable in a reason (the
    configuration file's key for a value read from it)."""

    def name(variable: str) -> str:
        return label(prefix + variable)

    unknown = sorted(
        name
        for name in environ
        if name.startswith(prefix) and name.removeprefix(prefix) not in SMTP_VARIABLES
    )
    if unknown:
        raise ValueError(
            f"{label(unknown[0])} is not an SMTP setting; see README, Email (optional)"
        )
    host = environ.get(prefix + "HOST", "").strip()
    if not host:
        others = [variable for variable in SMTP_VARIABLES if prefix + variable in environ]
        if others:
            raise ValueError(f"{name(others[0])} is set but {name('HOST')} is not")
        return None
    tls_text = environ.get(prefix + "TLS", SmtpTls.STARTTLS.value).strip().lower()
    try:
        tls = SmtpTls(tls_text)
    except ValueError:
        raise ValueError(f"{name('TLS')} must be none, starttls or tls, not {tls_text!r}") from None
    default_port = {SmtpTls.NONE: 25, SmtpTls.STARTTLS: 587, SmtpTls.TLS: 465}[tls]
    port_text = environ.get(prefix + "PORT", str(default_port)).strip()
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{name('PORT')} must be a port number, not {port_text!r}")
    from_address = environ.get(prefix + "FROM", "").strip()
    if not EMAIL_ADDRESS.fullmatch(from_address):
        raise ValueError(f"{name('FROM')} must be the address mail is sent from")
    user = environ.get(prefix + "USER", "").strip() or None
    password = environ.get(prefix + "PASSWORD") or None
    if (user is None) != (password is None):
        raise ValueError(f"set both {name('USER')} and {name('PASSWORD')}, or neither")
    timeout_text = environ.get(prefix + "TIMEOUT_SECONDS")
    timeout = SmtpSettings.timeout_seconds
    if timeout_text is not None:
        try:
            timeout = parse_number(timeout_text, 1.0, SMTP_TIMEOUT_MAX)
        except ValueError as error:
            raise ValueError(f"{name('TIMEOUT_SECONDS')}: {error}") from None
    return SmtpSettings(
        host=host,
        port=int(port_text),
        tls=tls,
        user=user,
        password=password,
        from_address=from_address,
        timeout_seconds=timeout,
    )


def parse_listen_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:9100` for IPv6): where a process listens, such as its metrics."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:9100)")
    return host, int(port)


LOG_FORMATS = ("text", "json")


def parse_log_format(text: str) -> str:
    """`text` (the default) or `json` (one object per line)."""
    value = text.strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"must be {' or '.join(LOG_FORMATS)}, not {text!r}")
    return value


def parse_integer(text: str, lowest: int, highest: int) -> int:
    """A whole number from `lowest` to `highest`."""
    text = text.strip()
    if not re.fullmatch(r"[0-9]{1,9}", text) or not lowest <= int(text) <= highest:
        raise ValueError(f"must be a whole number from {lowest} to {highest}, not {text!r}")
    return int(text)


def parse_number(text: str, lowest: float, highest: float) -> float:
    """A number (a decimal point allowed) from `lowest` to `highest`."""
    text = text.strip()
    if not re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,9})?", text) or not lowest <= float(text) <= highest:
        raise ValueError(f"must be a number from {lowest:g} to {highest:g}, not {text!r}")
    return float(text)


# Deliberately plain: one @, no spaces or angle brackets, a dot in the domain. Whether the
# address works is what the confirmation link proves.
EMAIL_ADDRESS = re.compile(r"[^@\s<>\"]{1,64}@[^@\s<>\"]{1,252}\.[^@\s<>\".]{1,63}")
EMAIL_ADDRESS_MAX = 254


class RegistrationMode(enum.StrEnum):
    """Who may create an account here (docs/OPERATIONS.md, "The node's name and registration")."""

    OPEN = "open"  # anyone, at once
    APPROVAL = "approval"  # anyone may ask; an admin approves or declines each new account
    CLOSED = "closed"  # nobody: the register page says so


IDENTITY_NAME_MAX = 80
IDENTITY_DESCRIPTION_MAX = 500
IDENTITY_CONTACT_MAX = 200
IDENTITY_OPERATOR_MAX = 200


@dataclass(frozen=True)
class IdentityDefaults:
    """The node's name, description, contact, who runs it and how people register, as the
    configuration file sets them; a value saved at /admin/settings wins over each."""

    name: str = "healthnode"
    description: str = ""
    contact: str = ""
    operator: str = ""
    registration: RegistrationMode = RegistrationMode.OPEN


def parse_registration(text: str) -> RegistrationMode:
    try:
        return RegistrationMode(text.strip().lower())
    except ValueError:
        choices = ", ".join(mode.value for mode in RegistrationMode)
        raise ValueError(f"must be one of {choices}, not {text!r}") from None


def identity_text(maximum: int) -> Callable[[str], str]:
    """One line (or, for a description, a paragraph) of at most `maximum` characters."""

    def parse(text: str) -> str:
        text = text.strip()
        if len(text) > maximum:
            raise ValueError(f"must be at most {maximum} characters")
        return text

    return parse


@dataclass(frozen=True)
class CrisisLine:
    """A crisis resource from the configuration (the admins' own, once they add any, replace
    them): the same fields as one added at /admin/crisis, and no row id."""

    name: str
    line: str = ""
    url: str = ""
    region: str = ""
    id: None = None


@dataclass(frozen=True)
class CrisisDefaults:
    """What the help page and a crisis prompt show until the admins set their own."""

    resources: tuple[CrisisLine, ...] = ()
    emergency_notice: str = ""


@dataclass(frozen=True)
class Settings:
    domain: str = DEFAULT_DOMAIN
    data_dir: Path = Path("data")
    database_url: str | None = None
    limits: Limits = field(default_factory=Limits)
    password_cost: PasswordCost = field(default_factory=PasswordCost)
    session_days: int = 30
    # Peers whose X-Forwarded-For names the client (the reverse proxy in front of the node).
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # A request head (line and headers) must arrive whole within this, and only so many
    # connections may be waiting for theirs at once.
    request_head_seconds: float = 10.0
    connections_awaiting_head_max: int = 256
    consent_policy_version: str = "2026-11"
    # The federation policy's mode when the configuration fixes it ("open" or "allowlist";
    # None: the database's, set with `healthnode federation mode` or on /admin/federation).
    federation_mode: str | None = None
    # Servers federated with in allowlist mode, in addition to those allowed in the database.
    allowed_domains: frozenset[str] = frozenset()
    # Servers whose activities and signed fetches are refused, before any key is fetched.
    blocked_domains: frozenset[str] = frozenset()
    # The operator's mail server; None: no email at all (members cannot add an address).
    smtp: SmtpSettings | None = None
    # The crisis resources and emergency notice shown until the admins set their own.
    crisis: CrisisDefaults = field(default_factory=CrisisDefaults)
    # How long a client's address may be kept (for the sign-in and registration throttles).
    address_retention: timedelta = ADDRESS_RETENTION_DEFAULT
    # The node secret when configured (HEALTHNODE_SECRET or node.secret in the configuration
    # file); None: the `node-secret` file in the data dir, created on first start.
    secret: str | None = field(default=None, repr=False)
    # What the node calls itself and whether people may register; /admin/settings wins.
    identity: IdentityDefaults = field(default_factory=IdentityDefaults)

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
