"""The `healthnode` command: serve, migrate, and create members and groups."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy.ext.asyncio import AsyncSession

from federation.convert import Documents
from federation.keyrotation import UnknownActor, rotate_key
from federation.keysink import attach_actor_keys
from federation.outbox import Outbox
from federation.service import Federation
from keys.pairs import generate_key_pair
from keys.secret import SecretError
from node import (
    accounts,
    admins,
    email_addresses,
    export,
    federation_policy,
    groups,
    ids,
    members,
    modlog,
    professionals,
)
from node.clock import Clock, ScaledClock, SystemClock
from node.config import Settings, parse_listen_address
from node.configuration import (
    ALLOWED_DOMAINS_ENV,
    BLOCKED_DOMAINS_ENV,
    DATABASE_URL_ENV,
    DEFAULT_LOG_FORMAT,
    KEYS_BY_DOTTED,
    RATE_PREFIX,
    SMTP_PREFIX,
    ConfigError,
    Configuration,
    load_configuration,
)
from node.erasure import ErasureRequest, erase_local_account
from node.errors import DomainError, Invalid
from node.moderation import suspend_account
from node.partners import partners_of
from node.runtime import NodeContext
from node.storage.backup import BackupError
from node.storage.copy import CopyError
from node.storage.files import restrict_new_files
from node.storage.models import Member
from web.app import create_app_owning_node
from web.backup_commands import register_backup_commands
from web.demo import run_demo
from web.logs import LOG_FORMATS, configure_logging
from web.metrics import Metrics, start_metrics_server
from web.serving import serve

# Every setting, its key in the configuration file and its variable: node/configuration.py.
CLOCK_RATE_ENV = KEYS_BY_DOTTED["development.clock_rate"].variable
TRUSTED_PROXIES_ENV = KEYS_BY_DOTTED["server.trusted_proxies"].variable
ADDRESS_RETENTION_ENV = KEYS_BY_DOTTED["privacy.address_retention"].variable
BLOCKED_DOMAINS_KEY = f"federation.blocked_domains or {BLOCKED_DOMAINS_ENV}"
ALLOWED_DOMAINS_KEY = f"federation.allowed_domains or {ALLOWED_DOMAINS_ENV}"
# HEALTHNODE_RATE_POSTS_PER_MEMBER=30/10m and so on: one variable per RateLimits field.
RATE_ENV_PREFIX = RATE_PREFIX
# HEALTHNODE_SMTP_HOST, _PORT, _TLS, _USER, _PASSWORD, _FROM: the optional mail server.
SMTP_ENV_PREFIX = SMTP_PREFIX


class CommandError(Exception):
    """A one-line reason the command could not be carried out."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"healthnode: {message} (see healthnode --help)\n")


def _storage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the configuration file (default: DATA_DIR/healthnode.toml, if it exists)",
    )
    parser.add_argument("--data-dir", type=Path, help="default ./data")
    parser.add_argument(
        "--database-url",
        help=f"SQLAlchemy URL (default: SQLite in the data dir, or ${DATABASE_URL_ENV})",
    )


def _metrics_address(text: str) -> str:
    """The text as given, once it parses: the configuration reads it like the file's value."""
    try:
        parse_listen_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _operations_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-address",
        type=_metrics_address,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off, or "
        "observability.metrics_address); never the public port",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="json: one object per line (default: text, or observability.log_format)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="healthnode", description="A federated health-community node.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    serve = commands.add_parser("serve", help="run the node's web server")
    serve.add_argument("--domain", help="public name IRIs are minted from (default localhost:PORT)")
    serve.add_argument("--host", help="the address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="the port to listen on (default 8080)")
    serve.add_argument(
        "--no-workers", action="store_true", help="web only; run `healthnode worker` beside it"
    )
    _operations_options(serve)
    _storage_options(serve)

    worker = commands.add_parser("worker", help="run the inbox and delivery workers alone")
    worker.add_argument(
        "--domain", help="the domain the web processes serve (default localhost:8080)"
    )
    _operations_options(worker)
    _storage_options(worker)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    _storage_options(migrate)

    member = commands.add_parser("member", help="manage members").add_subparsers(
        dest="action", required=True, parser_class=Parser
    )
    member_create = member.add_parser("create", help="create a member")
    member_create.add_argument("username")
    member_create.add_argument("--password-file", type=Path, required=True)
    member_create.add_argument("--display-name", default="")
    member_create.add_argument("--admin", action="store_true")
    _storage_options(member_create)
    _member_reset_password_command(member)
    _member_export_command(member)
    _member_admin_commands(member)

    group = commands.add_parser("group", help="manage condition groups").add_subparsers(
        dest="action", required=True, parser_class=Parser
    )
    group_create = group.add_parser("create", help="create a condition group")
    group_create.add_argument("slug")
    group_create.add_argument("--name", required=True)
    group_create.add_argument("--description", default="")
    group_create.add_argument("--rules", default="")
    group_create.add_argument("--condition", action="append", default=[], metavar="TAG")
    group_create.add_argument(
        "--visibility",
        choices=("public", "private", "partners"),
        help="public (default), private, or partners: shared with the --partner domains only",
    )
    group_create.add_argument(
        "--private", action="store_true", help="the same as --visibility private"
    )
    group_create.add_argument(
        "--partner",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="a partner domain of a partners group (a host name without a port; repeat it)",
    )
    group_create.add_argument("--join-policy", choices=("request", "invite"))
    group_create.add_argument("--owner", metavar="USERNAME", help="default: the first admin")
    _storage_options(group_create)
    keys = commands.add_parser("keys", help="manage actor keys").add_subparsers(
        dest="action", required=True, parser_class=Parser
    )
    rotate = keys.add_parser("rotate", help="replace an actor's key and tell its peers")
    rotate.add_argument("actor", help="a username, a public group's slug, or 'instance'")
    _storage_options(rotate)

    _federation_commands(commands)
    _notification_commands(commands)
    register_member_erase(commands)
    register_member_verify(commands)
    config = commands.add_parser("config", help="the node's configuration").add_subparsers(
        dest="action", required=True, parser_class=Parser
    )
    check = config.add_parser(
        "check", help="validate the configuration and print every value with its source"
    )
    check.add_argument("--domain", help="as given to serve")
    _storage_options(check)
    register_backup_commands(commands, _storage_options)

    demo = commands.add_parser("demo", help="three federating nodes on 127.0.0.1:8001-8003")
    demo.add_argument("--data-dir", type=Path, default=Path("data/demo"))
    return parser


def _member_reset_password_command(member: argparse._SubParsersAction[Parser]) -> None:
    reset = member.add_parser(
        "reset-password", help="print a one-time link (valid one hour) to set a new password"
    )
    reset.add_argument("username")
    reset.add_argument(
        "--domain", help="the domain the node serves, as given to serve (default localhost:8080)"
    )
    _storage_options(reset)


def _member_export_command(member: argparse._SubParsersAction[Parser]) -> None:
    export = member.add_parser(
        "export", help="write a member's data archive, for a request made in writing"
    )
    export.add_argument("username")
    export.add_argument("--out", type=Path, required=True, metavar="FILE")
    _storage_options(export)


def _member_admin_commands(member: argparse._SubParsersAction[Parser]) -> None:
    for name, admin, help_text in (
        ("promote", True, "make a member an admin of this node"),
        ("demote", False, "end a member's admin role (never the last admin's)"),
    ):
        command = member.add_parser(name, help=help_text)
        command.add_argument("username")
        command.add_argument("--reason", default=f"{name}d from the command line")
        command.set_defaults(work=_member_set_admin(admin))
        _storage_options(command)
    listing = member.add_parser("list", help="one line per member: username, role, state")
    listing.set_defaults(work=lambda args: _member_list)
    _storage_options(listing)
    suspend = member.add_parser("suspend", help="suspend an account and sign it out everywhere")
    suspend.add_argument("username")
    suspend.add_argument("--reason", required=True, help="kept in the admins' audit log")
    suspend.set_defaults(work=_member_suspend)
    _storage_options(suspend)


def _member_set_admin(
    admin: bool,
) -> Callable[[argparse.Namespace], Callable[[NodeContext], Awaitable[str]]]:
    def command(args: argparse.Namespace) -> Callable[[NodeContext], Awaitable[str]]:
        async def work(node: NodeContext) -> str:
            async with node.transaction() as session:
                member = await _existing_member(session, args.username)
                changed = await admins.set_admin(
                    session, member, admin, reason=modlog.required_reason(args.reason),
                    now=node.clock.now(), actor_label=CLI_ACTOR,
                )  # fmt: skip
            state = "an admin" if admin else "not an admin"
            return f"{member.username} is {'now' if changed else 'already'} {state}"

        return work

    return command


async def _member_list(node: NodeContext) -> str:
    """`USERNAME<TAB>ROLE<TAB>STATE<TAB>JOINED<TAB>LAST ACTIVE`, by username."""
    async with node.transaction(reading=True) as session:
        lines = await admins.local_members(session)
    rows = (
        (
            line.username,
            line.role,
            "suspended" if line.suspended else "active",
            line.created_at.date().isoformat(),
            line.last_active_at.date().isoformat(),
        )
        for line in lines
    )
    return "\n".join("\t".join(row) for row in rows)


def _member_suspend(args: argparse.Namespace) -> Callable[[NodeContext], Awaitable[str]]:
    async def work(node: NodeContext) -> str:
        async with node.transaction() as session:
            member = await _existing_member(session, args.username)
            if member.suspended_at is not None:
                return f"the account of {member.username} was already suspended"
            await suspend_account(
                session, member, reason=args.reason, now=node.clock.now(), actor_label=CLI_ACTOR
            )
        return f"suspended the account of {member.username} and signed it out everywhere"

    return work


async def _existing_member(session: AsyncSession, username: str) -> Member:
    member = await members.find_member(session, username)
    if member is None or member.erased_at is not None:
        raise CommandError(f"there is no member {username}")
    return member


def register_member_erase(commands: argparse._SubParsersAction[Parser]) -> None:
    """`healthnode member erase USERNAME`, on the `member` group (made here if absent)."""
    member = commands.choices.get("member")
    if member is None:
        member = commands.add_parser("member", help="manage members")
        member.add_subparsers(dest="action", required=True, parser_class=Parser)
    actions = next(
        action for action in member._actions if isinstance(action, argparse._SubParsersAction)
    )
    erase = actions.add_parser(
        "erase", help="erase a member's account, for a request made in writing"
    )
    erase.add_argument("username")
    erase.set_defaults(work=_member_erase)
    _storage_options(erase)


def _member_erase(args: argparse.Namespace) -> Callable[[NodeContext], Awaitable[str]]:
    async def work(node: NodeContext) -> str:
        # The Deletes are queued here and sent by the server's delivery worker.
        node.sinks.append(
            Outbox(Documents(node.settings), node.clock, lambda: None, node.federation_policy)
        )
        async with node.transaction() as session:
            member = await members.find_member(session, args.username)
            if member is None:
                raise CommandError(f"there is no member {args.username}")
            if member.erased_at is not None:
                return f"the account of {member.username} was already erased"
            await erase_local_account(
                session, member.id, node.clock.now(), ErasureRequest.ADMIN, CLI_ACTOR
            )
        return f"erased the account of {member.username}; its username stays reserved"

    return work


def _member_actions(commands: argparse._SubParsersAction[Parser]) -> Any:
    member = commands.choices["member"]
    return next(
        action for action in member._actions if isinstance(action, argparse._SubParsersAction)
    )


def register_member_verify(commands: argparse._SubParsersAction[Parser]) -> None:
    """`healthnode member verify USERNAME --title TEXT [--expires YYYY-MM-DD]` and
    `healthnode member unverify USERNAME` (verified professionals, node/professionals.py)."""
    actions = _member_actions(commands)
    verify = actions.add_parser(
        "verify", help="verify a member as a professional (a badge beside their posts)"
    )
    verify.add_argument("username")
    verify.add_argument("--title", required=True, help="such as 'Registered nurse'")
    verify.add_argument(
        "--expires", metavar="YYYY-MM-DD", default="", help="last day it holds (UTC)"
    )
    verify.set_defaults(work=_member_verify)
    _storage_options(verify)
    unverify = actions.add_parser("unverify", help="revoke a member's professional verification")
    unverify.add_argument("username")
    unverify.set_defaults(work=_member_unverify)
    _storage_options(unverify)


def _outbox_for(node: NodeContext) -> None:
    """Activities queued by a command are sent by the server's delivery worker."""
    node.sinks.append(
        Outbox(Documents(node.settings), node.clock, lambda: None, node.federation_policy)
    )


def _member_verify(args: argparse.Namespace) -> Callable[[NodeContext], Awaitable[str]]:
    async def work(node: NodeContext) -> str:
        _outbox_for(node)
        now = node.clock.now()
        expires_at = professionals.parse_expiry(args.expires, now)
        async with node.transaction() as session:
            row = await professionals.verify_member(
                session, args.username, title=args.title, expires_at=expires_at, now=now,
                actor_label=CLI_ACTOR,
            )  # fmt: skip
        until = f" until {args.expires.strip()}" if expires_at else ""
        return f"verified {args.username.strip()} as {row.title!r}{until}"

    return work


def _member_unverify(args: argparse.Namespace) -> Callable[[NodeContext], Awaitable[str]]:
    async def work(node: NodeContext) -> str:
        _outbox_for(node)
        async with node.transaction() as session:
            revoked = await professionals.unverify_member(
                session, args.username, now=node.clock.now(), actor_label=CLI_ACTOR
            )
        if not revoked:
            return f"{args.username.strip()} had no current verification"
        return f"revoked the verification of {args.username.strip()}"

    return work


def _policy_domain(text: str) -> str:
    try:
        return federation_policy.parse_policy_domain(text)
    except Invalid as error:
        raise argparse.ArgumentTypeError(_describe(error)) from None


def _notification_commands(commands: argparse._SubParsersAction[Parser]) -> None:
    notifications = commands.add_parser(
        "notifications", help="members' notifications"
    ).add_subparsers(dest="action", required=True, parser_class=Parser)
    digest = notifications.add_parser(
        "digest", help="email today's digest to members who chose one (run once a day)"
    )
    digest.set_defaults(work=lambda args: _send_digests)
    _storage_options(digest)


async def _send_digests(node: NodeContext) -> str:
    if node.mailer is None:
        raise CommandError("this node sends no email: configure a mail server first")
    async with node.transaction() as session:
        sent = await email_addresses.send_digests(
            session, node.settings, node.mailer, node.clock.now()
        )
    return f"queued {sent} digest{'s' if sent != 1 else ''}"


def _federation_commands(commands: argparse._SubParsersAction[Parser]) -> None:
    federation = commands.add_parser(
        "federation", help="which servers this node federates with"
    ).add_subparsers(dest="action", required=True, parser_class=Parser)
    mode = federation.add_parser("mode", help="open: all but blocked; allowlist: only allowed")
    mode.add_argument("mode", choices=[mode.value for mode in federation_policy.PolicyMode])
    _storage_options(mode)
    for kind in federation_policy.ListKind:
        listing = federation.add_parser(
            kind.value, help=f"{kind.value} a domain and its subdomains"
        )
        listing.add_argument("domain", metavar="DOMAIN", type=_policy_domain)
        listing.add_argument("--reason", default="")
        _storage_options(listing)
    unlist = federation.add_parser("unlist", help="neither allow nor block a domain any more")
    unlist.add_argument("domain", metavar="DOMAIN", type=_policy_domain)
    _storage_options(unlist)
    _storage_options(federation.add_parser("list", help="the mode, then one line per domain"))


def configuration_from(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> Configuration:
    """Defaults, the configuration file, the environment, then the command's options."""
    try:
        return load_configuration(
            config_file=getattr(args, "config", None),
            environ=os.environ if environ is None else environ,
            command_line={
                "node.domain": getattr(args, "domain", None),
                "node.data_dir": getattr(args, "data_dir", None),
                "database.url": getattr(args, "database_url", None),
                "server.host": getattr(args, "host", None),
                "server.port": getattr(args, "port", None),
                "observability.metrics_address": getattr(args, "metrics_address", None),
                "observability.log_format": getattr(args, "log_format", None),
            },
        )
    except ConfigError as error:
        raise CommandError(str(error)) from None


def settings_from(args: argparse.Namespace) -> Settings:
    return configuration_from(args).settings


def clock_for(configuration: Configuration) -> Clock:
    """The wall clock; on a development node, one that runs development.clock_rate
    (HEALTHNODE_CLOCK_RATE) times faster if that is set (to watch retries and circuits over
    minutes in seconds). The configuration has refused a rate for any other node."""
    if configuration.clock_rate is None:
        return SystemClock()
    return ScaledClock(configuration.clock_rate)


def _config_check(configuration: Configuration) -> str:
    """A line naming the file, then `KEY<TAB>VALUE<TAB>SOURCE` per key; secrets masked."""
    if configuration.file_read:
        head = f"# configuration file {configuration.file}"
    else:
        head = f"# no configuration file at {configuration.file}: defaults"
    return "\n".join([head, *configuration.lines()])


async def _with_node(settings: Settings, work: Callable[[NodeContext], Awaitable[str]]) -> str:
    node = await NodeContext.open(settings)
    attach_actor_keys(node)
    try:
        return await work(node)
    finally:
        await node.close()


async def _migrate(node: NodeContext) -> str:
    return "database is at the latest schema"


def _read_password(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as error:
        raise CommandError(f"cannot read password file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise CommandError(f"password file {path} is not UTF-8 text") from None


def _member_create(args: argparse.Namespace) -> Callable[[NodeContext], Awaitable[str]]:
    password = _read_password(args.password_file)

    async def work(node: NodeContext) -> str:
        async with node.transaction() as session:
            member = await members.create_member(
                session,
                node.passwords,
                node.settings.limits,
                username=args.username,
                password=password,
                display_name=args.display_name,
                now=node.clock.now(),
                is_admin=args.admin,
            )
        role = "admin" if args.admin else "member"
        return f"created {role} {member.username}"

    return work


def _member_reset_password(args: argparse.Namespace) -> Callable[[NodeContext], Awaitable[str]]:
    async def work(node: NodeContext) -> str:
        async with node.transaction() as session:
            token = await accounts.make_reset_token(
                session, args.username, node.clock.now(), actor_label=CLI_ACTOR, actor_id=None
            )
        # Standard output only, for the admin to hand over: the token is never logged.
        return node.settings.base_url + ids.password_reset_path(token)

    return work


def _group_visibility(args: argparse.Namespace) -> str:
    """The visibility the options ask for; CommandError when they contradict each other."""
    if args.private and args.visibility not in (None, "private"):
        raise CommandError(f"--private contradicts --visibility {args.visibility}")
    visibility: str = "private" if args.private else (args.visibility or "public")
    if visibility == "partners" and not args.partner:
        raise CommandError("a partners group needs at least one --partner DOMAIN")
    if visibility != "partners" and args.partner:
        raise CommandError(f"--partner is only for --visibility partners, not {visibility}")
    return visibility


def _group_create(args: argparse.Namespace) -> Callable[[NodeContext], Awaitable[str]]:
    visibility = _group_visibility(args)

    async def work(node: NodeContext) -> str:
        async with node.transaction() as session:
            owner = args.owner
            if owner is None:
                admin = await members.first_admin(session)
                if admin is None:
                    raise CommandError("no admin exists yet: give --owner USERNAME")
                owner = admin.username
            group = await groups.create_group_for_username(
                session,
                node.settings.limits,
                owner,
                slug=args.slug,
                name=args.name,
                description=args.description,
                rules=args.rules,
                tags=args.condition,
                visibility=visibility,
                partners=args.partner,
                join_policy=args.join_policy,
                now=node.clock.now(),
            )
            partners = await partners_of(session, group.id)
        if partners:
            return f"created partners group {group.slug} shared with {', '.join(partners)}"
        return f"created {group.visibility} group {group.slug}"

    return work


def _keys_rotate(args: argparse.Namespace) -> Callable[[NodeContext], Awaitable[str]]:
    async def work(node: NodeContext) -> str:
        # The Update is queued here and sent by the server's delivery worker.
        outbox = Outbox(Documents(node.settings), node.clock, lambda: None)
        async with node.transaction() as session:
            try:
                rotated = await rotate_key(
                    session, outbox, args.actor, node.secret, generate_key_pair, node.clock
                )
            except UnknownActor as error:
                raise CommandError(str(error)) from None
        return f"rotated the key of {rotated}"

    return work


CLI_ACTOR = "command line"
EXPORT_REASON = "data export requested in writing"


def _member_export(args: argparse.Namespace) -> Callable[[NodeContext], Awaitable[str]]:
    async def work(node: NodeContext) -> str:
        out: Path = args.out
        partial = out.with_name(out.name + ".partial")
        exported_at = node.clock.now()
        # Owner-only from its first byte; renamed into place only once it is complete.
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as sink:

                async def send(data: bytes) -> None:
                    sink.write(data)

                async with node.transaction(reading=True) as session:
                    member = await members.find_member(session, args.username)
                    if member is None:
                        raise CommandError(f"no member named {args.username} on this node")
                    await export.write_archive(
                        session, member, shapes=Documents(node.settings),
                        exported_at=exported_at, send=send,
                    )  # fmt: skip
            os.replace(partial, out)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        async with node.transaction() as session:
            await modlog.log_action(
                session, action=modlog.ModAction.EXPORT_DATA, reason=EXPORT_REASON,
                now=exported_at, actor_label=CLI_ACTOR, member_id=member.id,
            )  # fmt: skip
        return f"wrote the data of {member.username} to {out}"

    return work


def _federation(args: argparse.Namespace) -> Callable[[NodeContext], Awaitable[str]]:
    async def work(node: NodeContext) -> str:
        configured = federation_policy.ConfiguredPolicy.of(node.settings)
        now = node.clock.now()
        async with node.transaction() as session:
            if args.action == "list":
                return _policy_listing(
                    await federation_policy.load_policy(session, configured),
                    await federation_policy.listed_domains(session),
                    configured,
                )
            if args.action == "mode":
                changed = await federation_policy.set_mode(
                    session, federation_policy.PolicyMode(args.mode), now=now,
                    actor_label=CLI_ACTOR, configured=configured,
                )  # fmt: skip
            elif args.action == "unlist":
                changed = await federation_policy.unlist_domain(
                    session, args.domain, now=now, actor_label=CLI_ACTOR, configured=configured
                )
            else:
                changed = await federation_policy.list_domain(
                    session, args.domain, federation_policy.ListKind(args.action),
                    reason=args.reason, now=now, actor_label=CLI_ACTOR, configured=configured,
                )  # fmt: skip
        ended = changed.ended_memberships
        return f"federation {changed.summary}" + (
            f" ({ended} membership{'' if ended == 1 else 's'} ended)" if ended else ""
        )

    return work


def _one_field(text: str) -> str:
    return " ".join(text.split())  # a reason never breaks the tab-separated line


def _policy_listing(
    policy: federation_policy.DomainPolicy,
    listed: list[federation_policy.ListedDomain],
    configured: federation_policy.ConfiguredPolicy,
) -> str:
    """`mode<TAB>MODE`, then `DOMAIN<TAB>KIND<TAB>REASON` per domain, sorted by domain; the
    configuration's domains (not in the table) after the table's."""
    lines = [f"mode\t{policy.mode.value}"]
    lines += [f"{item.domain}\t{item.kind.value}\t{_one_field(item.reason)}" for item in listed]
    in_table = {item.domain for item in listed}
    for kind, domains, key in (
        ("allow", configured.allowed, ALLOWED_DOMAINS_KEY),
        ("block", configured.blocked, BLOCKED_DOMAINS_KEY),
    ):
        lines += [
            f"{domain}\t{kind}\tset by the configuration ({key})"
            for domain in sorted(domains - in_table)
        ]
    return "\n".join(lines)


def keep_what_started() -> None:
    """Once the node has started, what is alive (modules, mappers, compiled statements,
    templates) lives as long as the process: frozen out of the collector's sight, it is not
    walked again by every full collection, which otherwise stops the event loop for tens of
    milliseconds at a time."""
    gc.collect()
    gc.freeze()


def _serve(configuration: Configuration, workers: bool) -> None:
    settings, host, port = configuration.settings, configuration.host, configuration.port
    metrics_address = configuration.metrics_address
    if metrics_address is not None and metrics_address[1] == port:
        source = configuration.source_of(KEYS_BY_DOTTED["observability.metrics_address"])
        raise CommandError(
            f"the metrics address {_joined(metrics_address)} ({source}) must not use the "
            f"public port {port}; pick another"
        )
    app = create_app_owning_node(settings, clock=clock_for(configuration), run_workers=workers)

    def serving() -> None:  # once the node is open and the port bound
        keep_what_started()
        print(f"healthnode serving {settings.base_url} on http://{host}:{port}", flush=True)
        if metrics_address is not None:
            print(f"healthnode metrics on http://{_joined(metrics_address)}/metrics", flush=True)

    asyncio.run(serve(app, settings, host, port, ready=serving, metrics_address=metrics_address))


def _joined(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _work(configuration: Configuration) -> None:
    """Workers without a web server: several of these may share one PostgreSQL database."""
    settings, metrics_address = configuration.settings, configuration.metrics_address
    node = await NodeContext.open(settings, clock=clock_for(configuration))
    attach_actor_keys(node)
    metrics = Metrics(web=False)
    federation = Federation(node, metrics=metrics.federation)
    metrics_server = None
    try:
        if metrics_address is not None:
            metrics_server = await start_metrics_server(metrics, lambda: node, *metrics_address)
        federation.start_workers()
        keep_what_started()
        print(f"healthnode workers running for {settings.base_url}", flush=True)
        if metrics_address is not None:
            print(f"healthnode metrics on http://{_joined(metrics_address)}/metrics", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        if metrics_server is not None:
            await metrics_server.cleanup()
        await federation.close()
        await node.close()


def _describe(error: Exception) -> str:
    if isinstance(error, Invalid):
        return "; ".join(error.problems.values())
    return str(error)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    restrict_new_files()
    level = logging.INFO if args.command == "serve" else logging.WARNING
    try:
        if args.command == "demo":
            configure_logging(DEFAULT_LOG_FORMAT, level)
            asyncio.run(run_demo(args.data_dir))
            return 0
        # Every command but demo validates the whole configuration before it opens anything
        # (a wrong value is one line on stderr, whatever the log format).
        configuration = configuration_from(args)
        configure_logging(configuration.log_format, level)
        settings = configuration.settings
        if args.command == "config":
            print(_config_check(configuration))
            return 0
        if args.command == "serve":
            _serve(configuration, not args.no_workers)
            return 0
        if args.command == "worker":
            asyncio.run(_work(configuration))
            return 0
        if "run" in args:  # commands that work on the files without opening the node
            print(args.run(args, settings))
            return 0
        if args.command == "migrate":
            work = _migrate
        elif args.command == "member" and args.action == "reset-password":
            work = _member_reset_password(args)
        elif args.command == "member" and args.action == "export":
            work = _member_export(args)
        elif "work" in args:
            work = args.work(args)
        elif args.command == "member":
            work = _member_create(args)
        elif args.command == "keys":
            work = _keys_rotate(args)
        elif args.command == "federation":
            work = _federation(args)
        else:
            work = _group_create(args)
        print(asyncio.run(_with_node(settings, work)))
        return 0
    except (CommandError, SecretError, DomainError, BackupError, CopyError) as error:
        print(f"healthnode: {_describe(error)}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"healthnode: {error.strerror or error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
