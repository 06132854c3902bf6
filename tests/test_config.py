"""The configuration file (issue 15): defaults, then DATA_DIR/healthnode.toml or --config FILE,
then HEALTHNODE_* variables, then command-line options; `healthnode config check`; and one line
for anything invalid, before anything is opened.

The commands run as real subprocesses (as in tests/test_cli.py). The end-to-end test opens the
database the file names: a SQLite file, or a PostgreSQL schema when the suite runs on PostgreSQL.
"""

from __future__ import annotations

import ipaddress
import re
import typing
from dataclasses import fields, is_dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from keys.secret import SECRET_ENV, SECRET_FILE, load_or_create_node_secret
from node.config import (
    CrisisLine,
    PasswordCost,
    Rate,
    RateLimits,
    Settings,
    SmtpSettings,
    SmtpTls,
    Throttle,
)
from node.configuration import (
    CONFIG_FILE,
    KEYS,
    KEYS_BY_DOTTED,
    NOT_CONFIGURABLE,
    ConfigError,
    Source,
    load_configuration,
    shown,
)
from node.storage.engine import create_engine
from tests.databases import TestDatabases as Databases
from tests.test_cli import PASSWORD, healthnode_all, ok
from web.cli import build_parser, configuration_from

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "docs" / "healthnode.example.toml"
NODE_SECRET = "s3cret-node-value-" + "x" * 30
SMTP_PASSWORD = "mail-pass-9d2f"

A_FILE = f"""
[node]
domain = "health.example.org"
session_days = 14

[server]
port = 9001
trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]

[federation]
mode = "allowlist"
allowed_domains = ["Partner.example"]
blocked_domains = ["Spam.example"]

[smtp]
host = "mail.example.org"
tls = "tls"
user = "node"
password = "{SMTP_PASSWORD}"
from = "healthnode@example.org"

[rates]
posts_per_member = "5/1h"
reports_per_member = "off"
sign_in_per_address = "10,30s,2h"

[privacy]
address_retention = "36h"

[crisis]
resources = ["Samaritans | 116 123 | https://www.samaritans.org/ | UK and Ireland", "NHS 111 | 111"]
emergency_notice = "In an emergency, call 999."
"""


def write(path: Path, content: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    path.chmod(mode)
    return path


# --- precedence: file, environment, command line -----------------------------------------


def test_the_files_values_are_used(tmp_path: Path) -> None:
    # Given a file in the data dir, where every command looks without --config
    data_dir = tmp_path / "data"
    write(data_dir / CONFIG_FILE, A_FILE)

    # When the configuration is read with no variable and no option but the data dir
    configuration = load_configuration(environ={}, command_line={"node.data_dir": data_dir})

    # Then each value is the file's, parsed as its variable would be
    settings = configuration.settings
    assert settings.domain == "health.example.org"
    assert settings.session_days == 14
    assert configuration.port == 9001
    assert settings.trusted_proxies == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
    )
    assert settings.blocked_domains == frozenset({"spam.example"})
    assert settings.allowed_domains == frozenset({"partner.example"})
    assert settings.federation_mode == "allowlist"
    assert [(r.name, r.line, r.url, r.region) for r in settings.crisis.resources] == [
        ("Samaritans", "116 123", "https://www.samaritans.org/", "UK and Ireland"),
        ("NHS 111", "111", "", ""),
    ]
    assert settings.crisis.emergency_notice == "In an emergency, call 999."
    assert settings.smtp == SmtpSettings(
        host="mail.example.org",
        from_address="healthnode@example.org",
        port=465,
        tls=SmtpTls.TLS,
        user="node",
        password=SMTP_PASSWORD,
    )
    assert settings.limits.rates == RateLimits(
        posts_per_member=Rate(5, timedelta(hours=1)),
        reports_per_member=None,
        sign_in_per_address=Throttle(
            free=10, first_delay=timedelta(seconds=30), longest_delay=timedelta(hours=2)
        ),
    )
    assert settings.address_retention == timedelta(hours=36)
    assert configuration.file_read
    assert configuration.sources["node.domain"] is Source.FILE
    assert configuration.sources["node.data_dir"] is Source.COMMAND_LINE
    assert "server.host" not in configuration.sources  # a default


def test_no_file_gives_the_defaults(tmp_path: Path) -> None:
    configuration = load_configuration(
        environ={}, command_line={"node.data_dir": tmp_path / "none"}
    )
    assert not configuration.file_read
    assert configuration.settings == Settings(data_dir=tmp_path / "none")
    assert configuration.sources == {"node.data_dir": Source.COMMAND_LINE}


def test_the_environment_overrides_the_file_and_options_override_both(tmp_path: Path) -> None:
    config = write(tmp_path / "node.toml", A_FILE)
    environ = {
        "HEALTHNODE_DOMAIN": "env.example.org",
        "HEALTHNODE_RATE_POSTS_PER_MEMBER": "7/1m",
        "HEALTHNODE_SMTP_TLS": "starttls",
        "HEALTHNODE_PORT": "9002",
        "HEALTHNODE_SESSION_DAYS": " ",  # empty: unset, the file's value stays
    }

    from_environment = load_configuration(config_file=config, environ=environ)
    assert from_environment.settings.domain == "env.example.org"
    assert from_environment.settings.limits.rates.posts_per_member == Rate(7, timedelta(minutes=1))
    assert from_environment.settings.limits.rates.reports_per_member is None  # the file's
    smtp = from_environment.settings.smtp
    assert smtp is not None and (smtp.tls, smtp.port, smtp.host) == (
        SmtpTls.STARTTLS,
        587,
        "mail.example.org",
    )
    assert from_environment.settings.session_days == 14
    assert from_environment.port == 9002
    assert from_environment.sources["node.domain"] is Source.ENVIRONMENT
    assert from_environment.sources["node.session_days"] is Source.FILE

    args = build_parser().parse_args(
        ["serve", "--config", str(config), "--domain", "cli.example.org", "--port", "9003"]
    )
    from_options = configuration_from(args, environ)
    assert from_options.settings.domain == "cli.example.org"
    assert from_options.port == 9003
    assert from_options.sources["node.domain"] is Source.COMMAND_LINE
    assert from_options.source_of(KEYS_BY_DOTTED["node.domain"]) == "command line (--domain)"
    assert from_options.source_of(KEYS_BY_DOTTED["rates.posts_per_member"]) == (
        "environment (HEALTHNODE_RATE_POSTS_PER_MEMBER)"
    )


def test_a_configured_secret_is_the_node_secret(tmp_path: Path) -> None:
    config = write(tmp_path / "node.toml", f'[node]\nsecret = "{NODE_SECRET}"\n')
    settings = load_configuration(config_file=config, environ={}).settings
    data_dir = tmp_path / "data"
    assert load_or_create_node_secret(data_dir, settings.secret) == NODE_SECRET.encode()
    assert not (data_dir / SECRET_FILE).exists()
    assert NODE_SECRET not in repr(settings)
    # The variable wins over the file, as for every key.
    other = "e" * 40
    from_env = load_configuration(config_file=config, environ={SECRET_ENV: other}).settings
    assert from_env.secret == other


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[smtp]\nhots = 'x'\n", "unknown key smtp.hots; [smtp] takes host, port"),
        ("[mail]\nhost = 'x'\n", "unknown section [mail]; the sections are node, server"),
        ("domain = 'x'\n", "domain belongs under [node]"),
        ("smtp = 'x'\n", "smtp must be a section, [smtp]"),
        ("[server]\nport = '8080'\n", "server.port in {file} must be an integer, not str"),
        ("[server]\nport = true\n", "server.port in {file} must be an integer, not bool"),
        ("[server]\ntrusted_proxies = '10.0.0.0/8'\n", "must be an array of strings"),
        ("[node]\nsession_days = 0\n", "node.session_days in {file}: must be a whole number"),
        ("[rates]\nposts_per_member = 'lots'\n", "rates.posts_per_member in {file}: 'lots'"),
        ("[smtp]\nport = 25\n", "smtp.port in {file} is set but smtp.host (HEALTHNODE_SMTP_"),
        ("[privacy]\naddress_retention = '1h'\n", "is not between 1d and 90d"),
        ("[database]\nurl = 'mysql://x/y'\n", "database.url in {file}: must be a URL such as"),
        ("[federation]\nblocked_domains = ['a.example:80']\n", "has a port"),
        ("[crisis]\nresources = ['Samaritans']\n", "crisis.resources in {file}: Give a phone"),
        ("[federation]\nmode = 'closed'\n", 'federation.mode in {file}: must be "open" or'),
        ("[passwords]\nparallelism = 4\nmemory_cost_kib = 16\n", "at least 8 times"),
        ("[development]\nclock_rate = 10\n[node]\ndomain = 'x.org'\n", "development nodes"),
        ("[node\n", "is not valid TOML"),
    ],
)
def test_a_bad_file_is_one_reason_naming_the_key(tmp_path: Path, content: str, reason: str) -> None:
    config = write(tmp_path / "node.toml", content)
    with pytest.raises(ConfigError) as raised:
        load_configuration(config_file=config, environ={})
    message = str(raised.value)
    assert "\n" not in message
    assert reason.format(file=config) in message, message


def test_secrets_need_an_owner_only_file_and_the_data_dir_needs_config(tmp_path: Path) -> None:
    config = write(tmp_path / "node.toml", f'[node]\nsecret = "{NODE_SECRET}"\n', mode=0o640)
    with pytest.raises(ConfigError, match=r"holds node.secret: .*chmod 600"):
        load_configuration(config_file=config, environ={})
    # Found in the data dir, a file cannot move the data dir somewhere else.
    data_dir = tmp_path / "data"
    write(data_dir / CONFIG_FILE, '[node]\ndata_dir = "elsewhere"\n')
    with pytest.raises(ConfigError, match="only a file given with --config"):
        load_configuration(environ={}, command_line={"node.data_dir": data_dir})
    with pytest.raises(ConfigError, match="no such file"):
        load_configuration(config_file=tmp_path / "missing.toml", environ={})


def test_an_unknown_key_and_a_bad_value_stop_every_command_with_one_line(tmp_path: Path) -> None:
    # Given a file with an unknown key, one with a bad value, and a bad variable
    unknown = write(tmp_path / "unknown.toml", "[rates]\nposts_per_membr = '5/1h'\n")
    bad = write(tmp_path / "bad.toml", "[smtp]\nhost = 'mail.example.org'\nfrom = 'nobody'\n")
    data_dir = tmp_path / "untouched"
    storage = ["--data-dir", str(data_dir)]

    # When serve, worker and other commands start with them
    results = healthnode_all(
        tmp_path,
        [
            ["serve", "--port", "1", "--config", unknown, *storage],
            ["worker", "--config", bad, *storage],
            ["member", "list", "--config", unknown, *storage],
            ["migrate", "--config", bad, *storage],
            ["config", "check", "--config", unknown, *storage],
        ],
    )
    variable = healthnode_all(
        tmp_path, [["member", "list", *storage]], env={"HEALTHNODE_SESSION_DAYS": "forever"}
    )

    # Then each exits 1 with one line naming the key (or variable) and what it takes
    unknown_line = f"healthnode: {unknown}: unknown key rates.posts_per_membr; [rates] takes"
    bad_line = f"healthnode: smtp.from in {bad} must be the address mail is sent from"
    for result, expected in zip(
        results, [unknown_line, bad_line, unknown_line, bad_line, unknown_line], strict=True
    ):
        assert result.returncode == 1, result
        assert result.error_line().startswith(expected), result.error_line()
        assert result.stdout == ""
    assert variable[0].returncode == 1
    assert variable[0].error_line() == (
        "healthnode: HEALTHNODE_SESSION_DAYS: must be a whole number from 1 to 365, not 'forever'"
    )
    # And nothing was opened or written
    assert not data_dir.exists()


# --- config check, and the file's values used by real commands ----------------------------


async def test_commands_use_the_file_and_config_check_shows_sources_masked(
    tmp_path: Path, test_databases: Databases
) -> None:
    # Given a migrated database (SQLite, or a PostgreSQL schema) named only by the file, with
    # a secret and an SMTP password in it, and a secret in the environment too
    url = await test_databases.fresh("configured", tmp_path)
    data_dir = tmp_path / "data"
    config = write(
        tmp_path / "etc" / "healthnode.toml",
        f'[node]\ndomain = "health.example.org"\n\n[database]\nurl = "{url}"\n\n'
        f'[smtp]\nhost = "mail.example.org"\nfrom = "node@example.org"\nuser = "node"\n'
        f'password = "{SMTP_PASSWORD}"\n',
    )
    password_file = write(tmp_path / "password.txt", PASSWORD)
    storage = ["--config", str(config), "--data-dir", str(data_dir)]

    # When a member is created, then a reset link made with the file's domain, the
    # environment's, and the option's
    (created,) = healthnode_all(
        tmp_path, [["member", "create", "alice", "--password-file", password_file, *storage]]
    )
    assert ok(created) == "created member alice"
    from_file, from_env = (
        healthnode_all(tmp_path, [["member", "reset-password", "alice", *storage]], env=env)[0]
        for env in ({}, {"HEALTHNODE_DOMAIN": "env.example.org"})
    )
    (from_option, check) = healthnode_all(
        tmp_path,
        [
            ["member", "reset-password", "alice", "--domain", "cli.example.org", *storage],
            ["config", "check", "--domain", "cli.example.org", *storage],
        ],
        env={"HEALTHNODE_DOMAIN": "env.example.org", SECRET_ENV: NODE_SECRET},
    )

    # Then the member is in the file's database, not in SQLite in the data dir
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            usernames = (await connection.execute(text("SELECT username FROM members"))).all()
    finally:
        await engine.dispose()
    assert [row.username for row in usernames] == ["alice"]
    assert not (data_dir / "healthnode.sqlite3").exists()
    # And each link names the domain of the source that wins
    assert ok(from_file).startswith("https://health.example.org/")
    assert ok(from_env).startswith("https://env.example.org/")
    assert ok(from_option).startswith("https://cli.example.org/")

    # And config check lists every key once with its value and source, secrets masked
    output = ok(check)
    assert output.splitlines()[0] == f"# configuration file {config}"
    rows = [line.split("\t") for line in output.splitlines()[1:]]
    assert all(len(row) == 3 for row in rows), rows
    assert [row[0] for row in rows] == [key.dotted for key in KEYS]
    table = {key: (value, source) for key, value, source in rows}
    assert table["node.domain"] == ("cli.example.org", "command line (--domain)")
    assert table["node.data_dir"] == (str(data_dir), "command line (--data-dir)")
    assert table["node.secret"] == ("(set)", f"environment ({SECRET_ENV})")
    assert table["smtp.password"] == ("(set)", "file")
    assert table["smtp.host"] == ("mail.example.org", "file")
    assert table["smtp.port"] == ("587", "default")
    assert table["rates.posts_per_member"] == ("30/10m", "default")
    assert table["database.url"][1] == "file"
    assert NODE_SECRET not in check.stdout + check.stderr
    assert SMTP_PASSWORD not in check.stdout + check.stderr


def test_config_check_masks_a_database_password(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://node:db-pass-77@db.example.org/healthnode"
    (check,) = healthnode_all(
        tmp_path,
        [["config", "check", "--data-dir", tmp_path / "data"]],
        env={"HEALTHNODE_DATABASE_URL": url},
    )
    output = ok(check)
    assert "db-pass-77" not in output
    assert (
        "\t".join(["database.url", "postgresql+asyncpg://node:***@db.example.org/healthnode"])
        in output
    )
    expected_file = tmp_path / "data" / CONFIG_FILE
    assert output.splitlines()[0] == f"# no configuration file at {expected_file}: defaults"
    assert not (tmp_path / "data").exists()  # checking opens nothing


# --- every setting is a key, and the example documents every key --------------------------


def _leaves(cls: type, prefix: str = "") -> list[str]:
    """Every leaf field of a settings dataclass, dotted; Optional dataclasses are walked."""
    leaves = []
    for name, hint in typing.get_type_hints(cls).items():
        inner = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
        # Rate, Throttle and a crisis line are values (one text each), not groups of settings.
        values = (Rate, Throttle, CrisisLine)
        nested = next((arg for arg in inner if is_dataclass(arg) and arg not in values), None)
        if nested is not None and isinstance(nested, type):
            leaves += _leaves(nested, f"{prefix}{name}.")
        else:
            leaves.append(prefix + name)
    return leaves


def test_every_field_of_the_settings_is_a_key() -> None:
    leaves = _leaves(Settings)
    assert "limits.rates.posts_per_member" in leaves and "smtp.password" in leaves
    assert {f.name for f in fields(PasswordCost)} <= {leaf.split(".")[-1] for leaf in leaves}
    configured = {key.field for key in KEYS if key.field is not None}
    forgotten = [leaf for leaf in leaves if leaf not in configured | set(NOT_CONFIGURABLE)]
    assert not forgotten, f"add a key to node/configuration.py KEYS for: {forgotten}"
    assert not configured - set(leaves), "a key names a field that does not exist"


def _uncommented_example() -> tuple[str, set[str]]:
    """The example with every `# key = value` line uncommented, and the keys marked as
    examples (no default)."""
    lines, examples, section = [], set(), ""
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        heading = re.fullmatch(r"\[([a-z_]+)\]", line)
        if heading:
            section = heading.group(1)
        assignment = re.fullmatch(r"# ([a-z_]+) = (.*)", line)
        if assignment:
            line = line.removeprefix("# ")
            if line.endswith("# example"):
                examples.add(f"{section}.{assignment.group(1)}")
        lines.append(line)
    return "\n".join(lines) + "\n", examples


def test_the_example_file_lists_every_key_with_its_default(tmp_path: Path) -> None:
    # Given the example with every setting uncommented
    content, examples = _uncommented_example()
    config = write(tmp_path / "example.toml", content)

    # When it is read
    configuration = load_configuration(config_file=config, environ={})

    # Then every key was set by it (none is missing from the example)
    missing = [key.dotted for key in KEYS if configuration.sources.get(key.dotted) != Source.FILE]
    assert not missing, f"document these in docs/healthnode.example.toml: {missing}"
    # And every value not marked as an example is the default
    defaults = load_configuration(environ={}, command_line={"node.data_dir": Path("data")})
    wrong = [
        (key.dotted, shown(configuration, key), shown(defaults, key))
        for key in KEYS
        if key.dotted not in examples and shown(configuration, key) != shown(defaults, key)
    ]
    assert not wrong, f"the example's defaults are not the defaults: {wrong}"


def test_the_readme_documents_the_configuration() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "## Configuration" in readme
    assert "docs/healthnode.example.toml" in readme
    assert "healthnode config check" in readme
