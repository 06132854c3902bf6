"""The `healthnode` console command, run as a real subprocess on a temporary SQLite data dir.

These tests use SQLite in the data dir on every run, PostgreSQL runs included: what they check
is the command's behaviour (exit codes, one-line errors, nothing half-written), not the backend.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError

from keys.secret import SECRET_ENV, SECRET_FILE
from web.cli import CLOCK_RATE_ENV, DATABASE_URL_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]
DATABASE_FILE = "healthnode.sqlite3"
PASSWORD = "correct horse battery"
COMMAND_TIMEOUT = 60


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    def error_line(self) -> str:
        """The command's one-line reason; fails unless stderr is exactly one line."""
        lines = self.stderr.splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got: {self.stderr!r}"
        assert lines[0].startswith("healthnode: "), lines[0]
        return lines[0]


def command_env() -> dict[str, str]:
    """The caller's environment without anything that would move the database or the secret."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in (DATABASE_URL_ENV, SECRET_ENV, "PYTHONWARNINGS")
    }
    env["PYTHONPATH"] = str(REPO_ROOT)  # this checkout, wherever the command runs from
    return env


def command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "web.cli", *map(str, args)]


def healthnode(cwd: Path, *args: str | Path) -> Result:
    completed = subprocess.run(
        command(*args),
        cwd=cwd,
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


def healthnode_all(
    cwd: Path, cases: list[list[str | Path]], env: dict[str, str] | None = None
) -> list[Result]:
    """Run several independent commands at once (they only fail early), to keep the file fast."""
    processes = [
        subprocess.Popen(
            command(*args),
            cwd=cwd,
            env={**command_env(), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in cases
    ]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT)
        results.append(Result(process.returncode, stdout, stderr))
    return results


def ok(result: Result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@contextmanager
def database(data_dir: Path) -> Iterator[sqlite3.Connection]:
    path = data_dir / DATABASE_FILE
    assert path.exists(), f"no database at {path}"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        yield connection


def table_counts(data_dir: Path) -> dict[str, int]:
    with database(data_dir) as connection:
        tables = [
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {
            table: connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            for table in tables
        }


def password_file(directory: Path, password: str = PASSWORD) -> Path:
    path = directory / "password.txt"
    path.write_text(password + "\n", encoding="utf-8")
    return path


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- a running server ---------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    out: Path
    err: Path

    def stdout(self) -> str:
        return self.out.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str) -> int:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    def wait_until_serving_or_exit(self, deadline: float) -> bool:
        """True once GET / answers, False if the process exits first; fails at the deadline."""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                return self.get("/") > 0
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)  # a short pause between polls, bounded by the deadline
        pytest.fail(f"serve neither answered nor exited in time; stderr: {self.stderr()}")


@contextmanager
def served(cwd: Path, data_dir: Path, *args: str) -> Iterator[Server]:
    port = free_port()
    out, err = cwd / "serve.out", cwd / "serve.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            command("serve", "--port", str(port), "--data-dir", data_dir, *args),
            cwd=cwd,
            env=command_env(),
            stdout=stdout,
            stderr=stderr,
        )
    server = Server(process, port, out, err)
    try:
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=COMMAND_TIMEOUT)


# --- data dirs -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("cli-template")
    ok(healthnode(work, "migrate", "--data-dir", work / "data"))
    return work / "data"


@pytest.fixture(scope="module")
def admin_template(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Path:
    """A migrated data dir with one admin, alice, whose password is PASSWORD."""
    work = tmp_path_factory.mktemp("cli-admin")
    data_dir = work / "data"
    shutil.copytree(migrated_template, data_dir)
    ok(
        healthnode(
            work,
            "member",
            "create",
            "Alice",
            "--password-file",
            password_file(work),
            "--display-name",
            "Al",
            "--admin",
            "--data-dir",
            data_dir,
        )
    )
    return data_dir


@pytest.fixture
def migrated(tmp_path: Path, migrated_template: Path) -> Path:
    data_dir = tmp_path / "data"
    shutil.copytree(migrated_template, data_dir)  # keeps node-secret's 0600
    return data_dir


@pytest.fixture
def with_admin(tmp_path: Path, admin_template: Path) -> Path:
    data_dir = tmp_path / "data"
    shutil.copytree(admin_template, data_dir)
    return data_dir


# --- migrate ---------------------------------------------------------------------------------


def test_migrate_creates_the_database_and_a_private_node_secret(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"

    output = ok(healthnode(tmp_path, "migrate", "--data-dir", data_dir))

    assert output == "database is at the latest schema"
    secret = data_dir / SECRET_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_text().strip()) >= 32
    counts = table_counts(data_dir)
    assert {"handles", "members", "condition_groups", "posts", "alembic_version"} <= set(counts)
    assert counts["members"] == counts["handles"] == 0
    assert counts["alembic_version"] == 1

    # Running it again changes nothing, the secret included.
    before = secret.read_bytes()
    assert ok(healthnode(tmp_path, "migrate", "--data-dir", data_dir)) == output
    assert secret.read_bytes() == before
    assert table_counts(data_dir) == counts


# --- member create ---------------------------------------------------------------------------


def test_member_create_reads_the_password_file_and_makes_an_admin(
    tmp_path: Path, migrated: Path
) -> None:
    output = ok(
        healthnode(
            tmp_path,
            "member",
            "create",
            "Alice",
            "--password-file",
            password_file(tmp_path),
            "--admin",
            "--data-dir",
            migrated,
        )
    )

    assert output == "created admin alice"
    with database(migrated) as connection:
        rows = connection.execute(
            "SELECT username, display_name, role, password_hash FROM members"
        ).fetchall()
        handles = connection.execute("SELECT name, kind FROM handles").fetchall()
    assert [row[:3] for row in rows] == [("alice", "alice", "admin")]
    assert handles == [("alice", "member")]
    password_hash = rows[0][3]
    assert PasswordHasher().verify(password_hash, PASSWORD)  # the file's newline is not in it
    with pytest.raises(VerifyMismatchError):
        PasswordHasher().verify(password_hash, PASSWORD + "\n")


def test_member_create_without_admin_makes_a_plain_member(tmp_path: Path, with_admin: Path) -> None:
    output = ok(
        healthnode(
            tmp_path,
            "member",
            "create",
            "bob",
            "--password-file",
            password_file(tmp_path),
            "--data-dir",
            with_admin,
        )
    )

    assert output == "created member bob"
    with database(with_admin) as connection:
        roles = dict(connection.execute("SELECT username, role FROM members"))
    assert roles == {"alice": "admin", "bob": "member"}


def test_duplicate_username_differing_in_case_is_one_line_and_writes_nothing(
    tmp_path: Path, with_admin: Path
) -> None:
    before = table_counts(with_admin)

    result = healthnode(
        tmp_path,
        "member",
        "create",
        "ALICE",
        "--password-file",
        password_file(tmp_path, "another password"),
        "--display-name",
        "Impostor",
        "--data-dir",
        with_admin,
    )

    assert result.returncode != 0
    assert (
        result.error_line() == "healthnode: The username “alice” is not available. Choose another."
    )
    assert result.stdout == ""
    assert table_counts(with_admin) == before
    with database(with_admin) as connection:
        assert connection.execute("SELECT username, display_name FROM members").fetchall() == [
            ("alice", "Al")
        ]


def test_unreadable_password_file_is_one_line_and_writes_nothing(
    tmp_path: Path, with_admin: Path
) -> None:
    before = table_counts(with_admin)

    result = healthnode(
        tmp_path,
        "member",
        "create",
        "bob",
        "--password-file",
        tmp_path / "no-such-file",
        "--data-dir",
        with_admin,
    )

    assert result.returncode == 1
    assert "cannot read password file" in result.error_line()
    assert table_counts(with_admin) == before


# --- group create ----------------------------------------------------------------------------


def test_group_create_with_every_option(tmp_path: Path, with_admin: Path) -> None:
    # Given a second member, who will own the group
    ok(
        healthnode(
            tmp_path,
            "member",
            "create",
            "bob",
            "--password-file",
            password_file(tmp_path),
            "--data-dir",
            with_admin,
        )
    )

    # When a private group is created with every option
    output = ok(
        healthnode(
            tmp_path,
            "group",
            "create",
            "Asthma",
            "--name",
            "Asthma support",
            "--description",
            "For people living with asthma.",
            "--condition",
            "asthma",
            "--condition",
            "Lung Health",
            "--condition",
            "copd",
            "--private",
            "--owner",
            "BOB",
            "--data-dir",
            with_admin,
        )
    )

    # Then it is stored as given, owned by bob, with its tags and its handle: a private
    # group's address is random, never the one typed, which stays free
    assert output.startswith("created private group ")
    slug = output.removeprefix("created private group ")
    assert len(slug) == 24 and slug != "asthma"
    with database(with_admin) as connection:
        bob_id = connection.execute("SELECT id FROM members WHERE username = 'bob'").fetchone()[0]
        group = connection.execute(
            "SELECT id, slug, name, description, visibility, join_policy, owner_id "
            "FROM condition_groups"
        ).fetchone()
        group_id = group[0]
        tags = {tag for (tag,) in connection.execute("SELECT tag FROM group_conditions")}
        memberships = connection.execute(
            "SELECT group_id, member_id, state, role FROM memberships"
        ).fetchall()
        handle = connection.execute("SELECT kind FROM handles WHERE name = ?", (slug,)).fetchone()
        typed = connection.execute("SELECT kind FROM handles WHERE name = 'asthma'").fetchone()
    assert typed is None
    assert group[1:] == (
        slug,
        "Asthma support",
        "For people living with asthma.",
        "private",
        "request",
        bob_id,
    )
    assert tags == {"asthma", "lung-health", "copd"}
    assert memberships == [(group_id, bob_id, "active", "owner")]
    assert handle == ("group",)

    # And without --owner, a public group goes to the first admin
    output = ok(
        healthnode(tmp_path, "group", "create", "t1d", "--name", "T1D", "--data-dir", with_admin)
    )
    assert output == "created public group t1d"
    with database(with_admin) as connection:
        owner = connection.execute(
            "SELECT m.username, g.visibility, g.join_policy FROM condition_groups g "
            "JOIN members m ON m.id = g.owner_id WHERE g.slug = 't1d'"
        ).fetchone()
    assert owner == ("alice", "public", "open")


def test_group_with_an_unknown_owner_is_one_line_and_writes_nothing(
    tmp_path: Path, with_admin: Path
) -> None:
    before = table_counts(with_admin)

    result = healthnode(
        tmp_path,
        "group",
        "create",
        "asthma",
        "--name",
        "Asthma",
        "--owner",
        "nobody",
        "--data-dir",
        with_admin,
    )

    assert result.returncode != 0
    assert result.error_line() == "healthnode: There is no member called “nobody”."
    assert table_counts(with_admin) == before
    with database(with_admin) as connection:
        assert connection.execute("SELECT count(*) FROM condition_groups").fetchone() == (0,)
        assert connection.execute(
            "SELECT count(*) FROM handles WHERE name = 'asthma'"
        ).fetchone() == (0,)


def test_group_without_owner_or_admin_is_one_line_and_writes_nothing(
    tmp_path: Path, migrated: Path
) -> None:
    before = table_counts(migrated)

    result = healthnode(
        tmp_path, "group", "create", "asthma", "--name", "Asthma", "--data-dir", migrated
    )

    assert result.returncode == 1
    assert result.error_line() == "healthnode: no admin exists yet: give --owner USERNAME"
    assert table_counts(migrated) == before


# --- arguments -------------------------------------------------------------------------------


def test_missing_required_arguments_exit_2_with_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "untouched"
    cases = {
        "command": [],
        "--password-file": ["member", "create", "bob", "--data-dir", data_dir],
        "--name": ["group", "create", "asthma", "--data-dir", data_dir],
    }

    results = healthnode_all(tmp_path, list(cases.values()))

    for missing, result in zip(cases, results, strict=True):
        assert result.returncode == 2, (missing, result)
        line = result.error_line()
        assert "the following arguments are required" in line, line
        assert missing in line, line
        assert result.stdout == ""
    assert not data_dir.exists()


def test_serve_with_an_invalid_domain_is_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "untouched"
    domains = ["bad domain", "example.com:99999", "https://example.com", "me@example.com"]
    port = str(free_port())

    results = healthnode_all(
        tmp_path,
        [
            ["serve", "--domain", domain, "--port", port, "--data-dir", data_dir]
            for domain in domains
        ],
    )

    for domain, result in zip(domains, results, strict=True):
        assert result.returncode == 1, (domain, result)
        # The reason names the option it came from (node/configuration.py).
        assert result.error_line().startswith(f"healthnode: --domain: invalid domain {domain!r}")
        assert result.stdout == ""
    assert not data_dir.exists()


def test_serve_refuses_a_bad_clock_rate_before_opening_anything(tmp_path: Path) -> None:
    data_dir = tmp_path / "untouched"
    port = str(free_port())

    results = healthnode_all(
        tmp_path,
        [
            ["serve", "--domain", domain, "--port", port, "--data-dir", data_dir]
            for domain in ("example.com", f"localhost:{port}")
        ],
        env={CLOCK_RATE_ENV: "5000"},
    )

    production, development = results
    assert production.returncode == development.returncode == 1, results
    assert "for development nodes only" in production.error_line()
    assert "must be a number from 1 to 1000" in development.error_line()
    assert not data_dir.exists()


def test_serve_refuses_a_domain_with_a_non_numeric_port(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with served(tmp_path, data_dir, "--domain", "example.com:abc") as server:
        started = server.wait_until_serving_or_exit(deadline=time.monotonic() + 30)
    assert not started, "serve started with an invalid domain"
    assert server.process.returncode == 1
    assert "invalid domain" in Result(1, "", server.stderr()).error_line()


# --- serve -----------------------------------------------------------------------------------


def test_serve_answers_while_the_commands_work_on_the_same_data_dir(
    tmp_path: Path, with_admin: Path
) -> None:
    with served(tmp_path, with_admin) as server:
        # Given a node serving on a free port
        assert server.wait_until_serving_or_exit(time.monotonic() + 30), server.stderr()
        assert server.get("/") == 200
        assert f"on http://127.0.0.1:{server.port}" in server.stdout()
        assert server.get("/u/bob") == 404

        # When a member is created on the same data dir while it runs
        output = ok(
            healthnode(
                tmp_path,
                "member",
                "create",
                "bob",
                "--password-file",
                password_file(tmp_path),
                "--data-dir",
                with_admin,
            )
        )

        # Then the command succeeds and the running node shows the new member
        assert output == "created member bob"
        assert server.get("/u/bob") == 200

        # And SIGTERM stops it cleanly
        server.process.send_signal(signal.SIGTERM)
        returncode = server.process.wait(timeout=15)
    assert returncode == 0, server.stderr()


# --- member promote, demote, list, suspend --------------------------------------------------


def add_member(cwd: Path, data_dir: Path, username: str) -> None:
    args = ["member", "create", username, "--password-file", password_file(cwd)]
    ok(healthnode(cwd, *args, "--data-dir", data_dir))


def roles(data_dir: Path) -> dict[str, str]:
    with database(data_dir) as connection:
        return dict(connection.execute("SELECT username, role FROM members"))


def audit(data_dir: Path) -> list[tuple[str, str, str]]:
    with database(data_dir) as connection:
        return connection.execute(
            "SELECT action, actor_label, reason FROM moderation_log ORDER BY id"
        ).fetchall()


def test_promote_and_demote_change_the_role_and_are_audited(
    tmp_path: Path, with_admin: Path
) -> None:
    # Given an admin, alice, and a member, bob
    add_member(tmp_path, with_admin, "bob")
    # When the operator promotes bob, twice, then demotes him with a reason
    first = ok(healthnode(tmp_path, "member", "promote", "bob", "--data-dir", with_admin))
    again = ok(healthnode(tmp_path, "member", "promote", "Bob", "--data-dir", with_admin))
    assert roles(with_admin) == {"alice": "admin", "bob": "admin"}
    demoted = ok(
        healthnode(
            tmp_path, "member", "demote", "bob", "--reason", "left the team",
            "--data-dir", with_admin,
        )
    )  # fmt: skip
    # Then each says what happened, the role follows, and the audit log has both changes
    assert (first, again, demoted) == (
        "bob is now an admin",
        "bob is already an admin",
        "bob is now not an admin",
    )
    assert roles(with_admin) == {"alice": "admin", "bob": "member"}
    assert audit(with_admin) == [
        ("promote_admin", "command line", "promoted from the command line"),
        ("demote_admin", "command line", "left the team"),
    ]


def test_the_last_admin_is_never_demoted(tmp_path: Path, with_admin: Path) -> None:
    result = healthnode(tmp_path, "member", "demote", "alice", "--data-dir", with_admin)
    assert result.returncode == 1
    assert "only admin" in result.error_line()
    assert roles(with_admin) == {"alice": "admin"}
    assert audit(with_admin) == []


def test_unknown_members_are_one_line_and_change_nothing(tmp_path: Path, with_admin: Path) -> None:
    for action in ("promote", "demote"):
        result = healthnode(tmp_path, "member", action, "nobody", "--data-dir", with_admin)
        assert (result.returncode, result.error_line()) == (
            1,
            "healthnode: there is no member nobody",
        )
    result = healthnode(
        tmp_path, "member", "suspend", "nobody", "--reason", "spam", "--data-dir", with_admin
    )
    assert (result.returncode, result.error_line()) == (1, "healthnode: there is no member nobody")
    assert audit(with_admin) == []


def test_list_prints_one_line_per_member(tmp_path: Path, with_admin: Path) -> None:
    add_member(tmp_path, with_admin, "Bob")
    lines = ok(healthnode(tmp_path, "member", "list", "--data-dir", with_admin)).splitlines()
    assert [line.split("\t")[:3] for line in lines] == [
        ["alice", "admin", "active"],
        ["bob", "member", "active"],
    ]
    assert all(len(line.split("\t")) == 5 for line in lines)


def test_suspend_needs_a_reason_signs_out_and_is_audited(tmp_path: Path, with_admin: Path) -> None:
    add_member(tmp_path, with_admin, "bob")
    # A suspension without a reason is refused by the parser
    missing = healthnode(tmp_path, "member", "suspend", "bob", "--data-dir", with_admin)
    assert missing.returncode == 2 and "--reason" in missing.stderr
    # With one, the account is suspended and listed so, once
    args = ["member", "suspend", "bob", "--reason", "posting spam", "--data-dir", with_admin]
    assert ok(healthnode(tmp_path, *args)).startswith("suspended the account of bob")
    assert ok(healthnode(tmp_path, *args)) == "the account of bob was already suspended"
    listed = ok(healthnode(tmp_path, "member", "list", "--data-dir", with_admin))
    assert "bob\tmember\tsuspended" in listed
    assert audit(with_admin) == [("suspend_account", "command line", "posting spam")]


# --- notifications digest ---------------------------------------------------------------------


def test_notifications_digest_says_in_one_line_when_the_node_sends_no_email(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    result = healthnode(tmp_path, "notifications", "digest", "--data-dir", data_dir)
    assert result.returncode == 1
    assert "configure a mail server first" in result.error_line()
