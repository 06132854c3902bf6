"""The node's configuration: every setting, where it comes from, and one way to read it.

Defaults, then the configuration file (TOML, `DATA_DIR/healthnode.toml` or the file given with
`--config`), then the HEALTHNODE_* environment variables, then command-line options: each later
source overrides the earlier ones, key by key. Whatever its source, a value is text by the time
it is parsed (a file's integers, numbers and arrays are turned into the text the variable would
hold), and the same parse functions of node/config.py read it, so a value means the same
wherever it is written. A wrong value raises ConfigError naming where it was written
(`section.key in FILE`, the variable, or the option) and what is allowed.

docs/healthnode.example.toml lists every key with its default; tests/test_config.py checks that
every field of Settings is a key here (or is named in NOT_CONFIGURABLE with its reason) and
that the example documents every key.
"""

from __future__ import annotations

import enum
import os
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from keys.secret import SECRET_ENV, SECRET_FILE, SECRET_MIN
from node.config import (
    IDENTITY_CONTACT_MAX,
    IDENTITY_DESCRIPTION_MAX,
    IDENTITY_NAME_MAX,
    IDENTITY_OPERATOR_MAX,
    CrisisDefaults,
    CrisisLine,
    IdentityDefaults,
    Limits,
    PasswordCost,
    RateLimits,
    RegistrationMode,
    Settings,
    Throttle,
    format_address_retention,
    format_rate,
    format_throttle,
    identity_text,
    is_loopback_domain,
    parse_address_retention,
    parse_integer,
    parse_listen_address,
    parse_log_format,
    parse_networks,
    parse_number,
    parse_rate_limits,
    parse_registration,
    parse_smtp,
    validate_domain,
)
from node.crisis import (
    DEFAULT_EMERGENCY_NOTICE,
    NOTICE_MAX,
    RESOURCES_MAX,
    parse_crisis_line,
)
from node.errors import Invalid
from node.federation_policy import PolicyMode, parse_policy_domain
from node.text import neutralise, normalise_line_endings

T = TypeVar("T")
CONFIG_FILE = "healthnode.toml"
RATE_PREFIX = "HEALTHNODE_RATE_"
SMTP_PREFIX = "HEALTHNODE_SMTP_"
DATABASE_URL_ENV = "HEALTHNODE_DATABASE_URL"
BLOCKED_DOMAINS_ENV = "HEALTHNODE_BLOCKED_DOMAINS"
ALLOWED_DOMAINS_ENV = "HEALTHNODE_ALLOWED_DOMAINS"
FEDERATION_MODE_ENV = "HEALTHNODE_FEDERATION_MODE"
DEFAULT_DATA_DIR = Path("data")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_LOG_FORMAT = "text"
CLOCK_RATE_MAX = 1000.0


class ConfigError(Exception):
    """A one-line reason the configuration is not valid."""


class Source(enum.StrEnum):
    DEFAULT = "default"
    FILE = "file"
    ENVIRONMENT = "environment"
    COMMAND_LINE = "command line"


class Kind(enum.Enum):
    """What a key takes in the file (the environment always holds text)."""

    TEXT = "a string"
    INTEGER = "an integer"
    NUMBER = "a number"
    LIST = "an array of strings"
    LINES = "an array of strings, one item each"


@dataclass(frozen=True)
class Key:
    section: str
    name: str
    variable: str
    kind: Kind = Kind.TEXT
    # The Settings field it sets, dotted ("limits.rates.posts_per_member"); None for settings
    # of the process rather than of the node (the address served, the development clock).
    field: str | None = None
    option: str | None = None
    secret: bool = False

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"


def _rate_keys() -> tuple[Key, ...]:
    return tuple(
        Key("rates", f.name, RATE_PREFIX + f.name.upper(), field=f"limits.rates.{f.name}")
        for f in fields(RateLimits)
    )


def _password_keys() -> tuple[Key, ...]:
    return tuple(
        Key(
            "passwords",
            f.name,
            f"HEALTHNODE_PASSWORD_{f.name.upper()}",
            Kind.INTEGER,
            field=f"password_cost.{f.name}",
        )
        for f in fields(PasswordCost)
    )


KEYS: tuple[Key, ...] = (
    Key("node", "domain", "HEALTHNODE_DOMAIN", field="domain", option="--domain"),
    Key("node", "data_dir", "HEALTHNODE_DATA_DIR", field="data_dir", option="--data-dir"),
    Key("node", "secret", SECRET_ENV, field="secret", secret=True),
    Key("node", "session_days", "HEALTHNODE_SESSION_DAYS", Kind.INTEGER, field="session_days"),
    Key("node", "name", "HEALTHNODE_NODE_NAME", field="identity.name"),
    Key("node", "description", "HEALTHNODE_NODE_DESCRIPTION", field="identity.description"),
    Key("node", "contact", "HEALTHNODE_NODE_CONTACT", field="identity.contact"),
    Key("node", "operator", "HEALTHNODE_NODE_OPERATOR", field="identity.operator"),
    Key("node", "registration", "HEALTHNODE_REGISTRATION", field="identity.registration"),
    Key("server", "host", "HEALTHNODE_HOST", option="--host"),
    Key("server", "port", "HEALTHNODE_PORT", Kind.INTEGER, option="--port"),
    Key("server", "trusted_proxies", "HEALTHNODE_TRUSTED_PROXIES", Kind.LIST, "trusted_proxies"),
    Key(
        "server",
        "request_head_seconds",
        "HEALTHNODE_REQUEST_HEAD_SECONDS",
        Kind.NUMBER,
        "request_head_seconds",
    ),
    Key(
        "server",
        "connections_awaiting_head_max",
        "HEALTHNODE_CONNECTIONS_AWAITING_HEAD_MAX",
        Kind.INTEGER,
        "connections_awaiting_head_max",
    ),
    Key("database", "url", DATABASE_URL_ENV, field="database_url", option="--database-url"),
    Key("federation", "mode", FEDERATION_MODE_ENV, field="federation_mode"),
    Key("federation", "allowed_domains", ALLOWED_DOMAINS_ENV, Kind.LIST, "allowed_domains"),
    Key("federation", "blocked_domains", BLOCKED_DOMAINS_ENV, Kind.LIST, "blocked_domains"),
    Key("crisis", "resources", "HEALTHNODE_CRISIS_RESOURCES", Kind.LINES, "crisis.resources"),
    Key(
        "crisis",
        "emergency_notice",
        "HEALTHNODE_CRISIS_EMERGENCY_NOTICE",
        field="crisis.emergency_notice",
    ),
    Key("smtp", "host", SMTP_PREFIX + "HOST", field="smtp.host"),
    Key("smtp", "port", SMTP_PREFIX + "PORT", Kind.INTEGER, "smtp.port"),
    Key("smtp", "tls", SMTP_PREFIX + "TLS", field="smtp.tls"),
    Key("smtp", "user", SMTP_PREFIX + "USER", field="smtp.user"),
    Key("smtp", "password", SMTP_PREFIX + "PASSWORD", field="smtp.password", secret=True),
    Key("smtp", "from", SMTP_PREFIX + "FROM", field="smtp.from_address"),
    Key(
        "smtp",
        "timeout_seconds",
        SMTP_PREFIX + "TIMEOUT_SECONDS",
        Kind.NUMBER,
        "smtp.timeout_seconds",
    ),
    *_rate_keys(),
    Key("privacy", "address_retention", "HEALTHNODE_ADDRESS_RETENTION", field="address_retention"),
    *_password_keys(),
    Key(
        "observability",
        "metrics_address",
        "HEALTHNODE_METRICS_ADDRESS",
        option="--metrics-address",
    ),
    Key("observability", "log_format", "HEALTHNODE_LOG_FORMAT", option="--log-format"),
    Key("development", "clock_rate", "HEALTHNODE_CLOCK_RATE", Kind.NUMBER),
)
KEYS_BY_DOTTED = {key.dotted: key for key in KEYS}
KEYS_BY_VARIABLE = {key.variable: key for key in KEYS}
SECTIONS = tuple(dict.fromkeys(key.section for key in KEYS))

# Fields of Settings that are deliberately not settings, with the reason.
NOT_CONFIGURABLE: dict[str, str] = {
    **{
        f"limits.{f.name}": "input limits are fixed by the schema and documented (README, Limits)"
        for f in fields(Limits)
        if f.name != "rates"
    },
    "consent_policy_version": "the version of the privacy notice this code ships; admins' "
    "edits at /admin/privacy extend it",
}


@dataclass(frozen=True)
class Configuration:
    """The effective settings, the process's own (addresses, log format, clock), and where
    each came from."""

    settings: Settings
    host: str
    port: int
    clock_rate: float | None
    metrics_address: tuple[str, int] | None
    log_format: str
    file: Path
    file_read: bool
    sources: Mapping[str, Source]

    def source_of(self, key: Key) -> str:
        source = self.sources.get(key.dotted, Source.DEFAULT)
        if source is Source.ENVIRONMENT:
            return f"{source} ({key.variable})"
        if source is Source.COMMAND_LINE:
            return f"{source} ({key.option})"
        return str(source)

    def lines(self) -> list[str]:
        """`KEY<TAB>VALUE<TAB>SOURCE` for every key, secrets shown only as "(set)"."""
        return [f"{key.dotted}\t{shown(self, key)}\t{self.source_of(key)}" for key in KEYS]


def shown(configuration: Configuration, key: Key) -> str:
    """A key's effective value as the file would hold it (without quotes), or a note."""
    settings = configuration.settings
    smtp = settings.smtp
    if key.secret:
        value = settings.secret if key.name == "secret" else smtp and smtp.password
        if value:
            return "(set)"
        return f"(not set: DATA_DIR/{SECRET_FILE})" if key.name == "secret" else "(not set)"
    if key.section == "smtp":
        if smtp is None:
            return "(not set)"
        smtp_values = {
            "host": smtp.host,
            "port": str(smtp.port),
            "tls": smtp.tls.value,
            "user": smtp.user or "(not set)",
            "from": smtp.from_address,
            "timeout_seconds": f"{smtp.timeout_seconds:g}",
        }
        return smtp_values[key.name]
    if key.section == "rates":
        limit = getattr(settings.limits.rates, key.name)
        return format_throttle(limit) if isinstance(limit, Throttle) else format_rate(limit)
    if key.section == "passwords":
        return str(getattr(settings.password_cost, key.name))
    simple: dict[str, Callable[[], str]] = {
        "node.domain": lambda: settings.domain,
        "node.data_dir": lambda: str(settings.data_dir),
        "node.session_days": lambda: str(settings.session_days),
        "node.name": lambda: settings.identity.name,
        "node.description": lambda: settings.identity.description,
        "node.contact": lambda: settings.identity.contact,
        "node.operator": lambda: settings.identity.operator,
        "node.registration": lambda: settings.identity.registration.value,
        "server.host": lambda: configuration.host,
        "server.port": lambda: str(configuration.port),
        "server.trusted_proxies": lambda: ",".join(map(str, settings.trusted_proxies)) or "(none)",
        "server.request_head_seconds": lambda: f"{settings.request_head_seconds:g}",
        "server.connections_awaiting_head_max": lambda: str(settings.connections_awaiting_head_max),
        "database.url": lambda: _shown_database_url(settings),
        "federation.mode": lambda: (
            settings.federation_mode or "(not set: the database's, open unless changed)"
        ),
        "federation.allowed_domains": lambda: (
            ",".join(sorted(settings.allowed_domains)) or "(none)"
        ),
        "federation.blocked_domains": lambda: (
            ",".join(sorted(settings.blocked_domains)) or "(none)"
        ),
        "privacy.address_retention": lambda: format_address_retention(settings.address_retention),
        "crisis.resources": lambda: (
            " ; ".join(
                " | ".join((item.name, item.line, item.url, item.region)).rstrip(" |")
                for item in settings.crisis.resources
            )
            or "(none: the admins add them at /admin/crisis)"
        ),
        "crisis.emergency_notice": lambda: (
            " ".join(settings.crisis.emergency_notice.split())
            or f"(not set: {DEFAULT_EMERGENCY_NOTICE})"
        ),
        "observability.metrics_address": lambda: (
            "(not set: no metrics)"
            if configuration.metrics_address is None
            else _joined_address(configuration.metrics_address)
        ),
        "observability.log_format": lambda: configuration.log_format,
        "development.clock_rate": lambda: (
            "(not set: the wall clock)"
            if configuration.clock_rate is None
            else f"{configuration.clock_rate:g}"
        ),
    }
    return simple[key.dotted]()


def _joined_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _shown_database_url(settings: Settings) -> str:
    if not settings.database_url:
        return f"(not set: SQLite at {settings.data_dir / 'healthnode.sqlite3'})"
    # A password in the URL is a secret too.
    return make_url(settings.database_url).render_as_string(hide_password=True)


# --- reading ----------------------------------------------------------------------------------


def _file_text(key: Key, value: object, label: str) -> str:
    """The text a file's value stands for, as its environment variable would hold it."""
    wrong = ConfigError(f"{label} must be {key.kind.value}, not {type(value).__name__}")
    if key.kind is Kind.TEXT:
        if not isinstance(value, str):
            raise wrong
        return value
    if key.kind is Kind.LIST:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise wrong
        if any("," in item for item in value):
            raise ConfigError(f"{label}: give one item per string, without commas")
        return ",".join(value)
    if key.kind is Kind.LINES:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise wrong
        if any("\n" in item for item in value):
            raise ConfigError(f"{label}: give one item per string, without line breaks")
        return "\n".join(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong
    if key.kind is Kind.INTEGER and not isinstance(value, int):
        raise wrong
    return str(value)


def _read_file(path: Path, required: bool) -> dict[str, object] | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"cannot read {path}: no such file") from None
        return None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None


def _file_values(path: Path, document: Mapping[str, object], given: bool) -> dict[str, str]:
    """Every value of the file by its variable, after checking sections, keys and types."""
    values: dict[str, str] = {}
    for section, table in document.items():
        if not isinstance(table, dict):
            homes = [f"[{key.section}]" for key in KEYS if key.name == section]
            if homes:
                raise ConfigError(f"{path}: {section} belongs under {' or '.join(homes)}")
            if section in SECTIONS:
                raise ConfigError(f"{path}: {section} must be a section, [{section}]")
        if section not in SECTIONS:
            raise ConfigError(
                f"{path}: unknown section [{section}]; the sections are {', '.join(SECTIONS)}"
            )
        assert isinstance(table, dict)
        for name, value in table.items():
            key = KEYS_BY_DOTTED.get(f"{section}.{name}")
            if key is None:
                known = ", ".join(k.name for k in KEYS if k.section == section)
                raise ConfigError(
                    f"{path}: unknown key {section}.{name}; [{section}] takes {known}"
                )
            values[key.variable] = _file_text(key, value, f"{key.dotted} in {path}")
    if KEYS_BY_DOTTED["node.data_dir"].variable in values and not given:
        raise ConfigError(
            f"node.data_dir in {path}: only a file given with --config may name the data dir"
        )
    holds_secret = [key.dotted for key in KEYS if key.secret and key.variable in values]
    if holds_secret and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path} holds {holds_secret[0]}: make it readable by its owner only (chmod 600)"
        )
    return values


def load_configuration(
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    command_line: Mapping[str, object | None] | None = None,
) -> Configuration:
    """The configuration from defaults, the file, `environ` (default os.environ) and
    `command_line` (values by dotted key; None: not given). Raises ConfigError."""
    environ = os.environ if environ is None else environ
    given = {name: value for name, value in (command_line or {}).items() if value is not None}
    for dotted in given:
        if dotted not in KEYS_BY_DOTTED:
            raise ValueError(f"{dotted} is not a configuration key")

    # The file: --config FILE, else healthnode.toml in the data dir named before any file.
    data_dir_variable = KEYS_BY_DOTTED["node.data_dir"].variable
    if config_file is not None:
        path = config_file
    else:
        data_dir_text = str(given.get("node.data_dir") or "").strip()
        data_dir_text = data_dir_text or environ.get(data_dir_variable, "").strip()
        path = Path(data_dir_text or DEFAULT_DATA_DIR) / CONFIG_FILE
    document = _read_file(path, required=config_file is not None)
    raw: dict[str, str] = {}
    origin: dict[str, Source] = {}
    if document is not None:
        for variable, text in _file_values(path, document, config_file is not None).items():
            raw[variable], origin[variable] = text, Source.FILE
    # The environment: every known variable, and any of the strict prefixes (a misspelt
    # rate or SMTP variable must stop the node, not leave a default). Empty means unset.
    for variable, text in environ.items():
        known = variable in KEYS_BY_VARIABLE or variable.startswith((RATE_PREFIX, SMTP_PREFIX))
        if known and text.strip():
            raw[variable], origin[variable] = text, Source.ENVIRONMENT
    for dotted, value in given.items():
        variable = KEYS_BY_DOTTED[dotted].variable
        raw[variable], origin[variable] = str(value), Source.COMMAND_LINE

    def label(variable: str) -> str:
        key = KEYS_BY_VARIABLE.get(variable)
        if key is None or origin.get(variable) is Source.ENVIRONMENT:
            return variable
        if origin.get(variable) is Source.COMMAND_LINE:
            return key.option or key.dotted
        if origin.get(variable) is Source.FILE:
            return f"{key.dotted} in {path}"
        return f"{key.dotted} ({variable})"  # named in a reason, but set nowhere

    def value(dotted: str, parse: Callable[[str], T], default: T) -> T:
        variable = KEYS_BY_DOTTED[dotted].variable
        if variable not in raw:
            return default
        try:
            return parse(raw[variable])
        except ValueError as error:
            raise ConfigError(f"{label(variable)}: {error}") from None

    def whole(lowest: int, highest: int) -> Callable[[str], int]:
        return lambda text: parse_integer(text, lowest, highest)

    def number(lowest: float, highest: float) -> Callable[[str], float]:
        return lambda text: parse_number(text, lowest, highest)

    base = Settings()
    port = value("server.port", whole(1, 65535), DEFAULT_PORT)
    host = value("server.host", _parse_host, DEFAULT_HOST)
    domain = value("node.domain", validate_domain, f"localhost:{port}")
    password_cost = PasswordCost(
        **{
            f.name: value(
                f"passwords.{f.name}",
                whole(*PASSWORD_COST_RANGES[f.name]),
                getattr(base.password_cost, f.name),
            )
            for f in fields(PasswordCost)
        }
    )
    if password_cost.memory_cost_kib < 8 * password_cost.parallelism:
        variable = KEYS_BY_DOTTED["passwords.memory_cost_kib"].variable
        raise ConfigError(
            f"{label(variable)}: must be at least 8 times passwords.parallelism "
            f"({8 * password_cost.parallelism})"
        )
    try:
        rates = parse_rate_limits(raw, RATE_PREFIX, label)
        smtp = parse_smtp(raw, SMTP_PREFIX, label)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    settings = replace(
        base,
        domain=domain,
        data_dir=value("node.data_dir", _parse_path, DEFAULT_DATA_DIR),
        secret=value("node.secret", _parse_secret, None),
        session_days=value("node.session_days", whole(1, 365), base.session_days),
        trusted_proxies=value("server.trusted_proxies", parse_networks, base.trusted_proxies),
        request_head_seconds=value(
            "server.request_head_seconds", number(1, 300), base.request_head_seconds
        ),
        connections_awaiting_head_max=value(
            "server.connections_awaiting_head_max",
            whole(1, 100_000),
            base.connections_awaiting_head_max,
        ),
        database_url=value("database.url", _parse_database_url, None),
        federation_mode=value("federation.mode", _parse_federation_mode, None),
        allowed_domains=value("federation.allowed_domains", _parse_domains, frozenset()),
        blocked_domains=value("federation.blocked_domains", _parse_domains, frozenset()),
        smtp=smtp,
        crisis=CrisisDefaults(
            resources=value("crisis.resources", _parse_crisis_lines, ()),
            emergency_notice=value("crisis.emergency_notice", _parse_notice, ""),
        ),
        limits=Limits(rates=rates),
        address_retention=value(
            "privacy.address_retention", parse_address_retention, base.address_retention
        ),
        password_cost=password_cost,
        identity=IdentityDefaults(
            name=value("node.name", _parse_node_name, base.identity.name),
            description=value("node.description", identity_text(IDENTITY_DESCRIPTION_MAX), ""),
            contact=value("node.contact", identity_text(IDENTITY_CONTACT_MAX), ""),
            operator=value("node.operator", identity_text(IDENTITY_OPERATOR_MAX), ""),
            registration=value("node.registration", parse_registration, RegistrationMode.OPEN),
        ),
    )
    clock_rate = value("development.clock_rate", _parse_clock_rate(domain), None)
    metrics_address = value("observability.metrics_address", parse_listen_address, None)
    log_format = value("observability.log_format", parse_log_format, DEFAULT_LOG_FORMAT)
    return Configuration(
        settings=settings,
        host=host,
        port=port,
        clock_rate=clock_rate,
        metrics_address=metrics_address,
        log_format=log_format,
        file=path,
        file_read=document is not None,
        sources={key.dotted: origin[key.variable] for key in KEYS if key.variable in origin},
    )


PASSWORD_COST_RANGES = {
    "time_cost": (1, 20),
    "memory_cost_kib": (8, 4 * 1024 * 1024),
    "parallelism": (1, 64),
    "concurrent_hashes": (1, 64),
}


def _parse_node_name(text: str) -> str:
    name = identity_text(IDENTITY_NAME_MAX)(text)
    if not name:
        raise ValueError("must not be empty")
    return name


def _parse_host(text: str) -> str:
    host = text.strip()
    if not host or any(character.isspace() for character in host):
        raise ValueError(f"must be an address to listen on such as 127.0.0.1, not {text!r}")
    return host


def _parse_path(text: str) -> Path:
    if not text.strip():
        raise ValueError("must name a directory")
    return Path(text.strip())


def _parse_secret(text: str) -> str:
    if len(text) < SECRET_MIN:
        raise ValueError(f"must be at least {SECRET_MIN} characters")
    return text


DATABASE_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")


def _parse_database_url(text: str) -> str:
    reason = (
        "must be a URL such as postgresql+asyncpg://user@host/dbname "
        "or sqlite+aiosqlite:////path/to/file.sqlite3"
    )
    try:
        url = make_url(text.strip())
    except ArgumentError:
        raise ValueError(reason) from None
    if url.drivername not in DATABASE_DRIVERS:
        raise ValueError(reason)
    return text.strip()


def _parse_crisis_lines(text: str) -> tuple[CrisisLine, ...]:
    lines = tuple(parse_crisis_line(line) for line in text.splitlines() if line.strip())
    if len(lines) > RESOURCES_MAX:
        raise ValueError(f"at most {RESOURCES_MAX} resources")
    return lines


def _parse_notice(text: str) -> str:
    notice = neutralise(normalise_line_endings(text)).strip()
    if len(notice) > NOTICE_MAX:
        raise ValueError(f"is longer than {NOTICE_MAX} characters")
    return notice


def _parse_federation_mode(text: str) -> str:
    mode = text.strip()
    if mode not in {m.value for m in PolicyMode}:
        raise ValueError(f'must be "open" or "allowlist", not {text!r}')
    return mode


def _parse_domains(text: str) -> frozenset[str]:
    domains = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            domains.add(parse_policy_domain(item))
        except Invalid as error:
            raise ValueError(" ".join(error.problems.values())) from None
    return frozenset(domains)


def _parse_clock_rate(domain: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        if not is_loopback_domain(domain):
            raise ValueError("for development nodes only (a loopback domain)")
        return parse_number(text, 1, CLOCK_RATE_MAX)

    return parse
