"""Every `healthnode ...` command line in docs/OPERATIONS.md and README.md parses with the real
argument parser (web.cli.build_parser), so the documentation cannot drift from the command.

What counts as a command line: in fenced and indented code blocks, every line (backslash
continuations joined, `#` comments dropped) whose command is `healthnode` or a path ending in
`/healthnode`, after a crontab line's schedule, any `VAR=value` assignments and a
`sudo [-u USER]`, or a systemd `ExecStart=` naming it; and every inline code span that starts
that way. A usage synopsis (`[--option X]`, `a|b`) is checked with its brackets removed, once
for every alternative. An inline span may leave out required arguments (it names a command in
prose: `healthnode backup`), but every word it has must parse."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.configuration import load_configuration
from web.cli import build_parser

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("docs/OPERATIONS.md", "README.md")
SHELL_OPERATORS = ("|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1")
FENCE = re.compile(r"^\s*```")
SUBSTITUTION = re.compile(r"\$\([^()]*\)")
CRON_FIELD = re.compile(r"[0-9*/,-]+")
INLINE = re.compile(r"`([^`\n]*(?:\n[^`\n]+)*)`")


@dataclass(frozen=True)
class CommandLine:
    where: str
    words: tuple[str, ...]  # the words after `healthnode`
    inline: bool


def _command_words(text: str) -> list[str] | None:
    """The arguments given to `healthnode` on one shell line, or None if it runs another
    command."""
    text = SUBSTITUTION.sub("SUBSTITUTED", text)
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:
        return None
    position = 0
    if len(tokens) > 5 and all(CRON_FIELD.fullmatch(token) for token in tokens[:5]):
        position = 5  # a crontab line: the schedule, then the command
    if tokens and tokens[0].startswith("ExecStart="):
        tokens[0] = tokens[0].removeprefix("ExecStart=")
    while position < len(tokens) and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[position]):
        position += 1
    if position < len(tokens) and tokens[position] == "sudo":
        position += 1
        while position < len(tokens) and tokens[position].startswith("-"):
            position += 2 if tokens[position] in ("-u", "--user", "-g", "--group") else 1
        while position < len(tokens) and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[position]):
            position += 1
    if position >= len(tokens):
        return None
    name = tokens[position]
    if "=" in name or (name != "healthnode" and not name.endswith("/healthnode")):
        return None  # another command, or a setting such as WorkingDirectory=/var/lib/healthnode
    words = []
    for token in tokens[position + 1 :]:
        if token in SHELL_OPERATORS:
            break
        words.append(token)
    return words


def _code_lines(text: str) -> list[tuple[int, str]]:
    """(line number, logical line) of every fenced or indented code line, continuations joined
    (a backslash at the end, or, in a synopsis, a line that starts with `[` or `--`)."""
    lines: list[tuple[int, str]] = []
    in_fence = False
    pending: tuple[int, str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        code = in_fence or line.startswith("    ")
        if not code:
            continue
        stripped = line.strip()
        if pending is not None:
            pending = (pending[0], pending[1] + " " + stripped)
        elif lines and stripped.startswith(("[-", "--")) and not stripped.startswith("--- "):
            start, previous = lines.pop()
            pending = (start, previous + " " + stripped)
        else:
            pending = (number, stripped)
        if pending[1].endswith("\\"):
            pending = (pending[0], pending[1][:-1].rstrip())
            continue
        lines.append(pending)
        pending = None
    return lines


def command_lines() -> list[CommandLine]:
    found = []
    for document in DOCUMENTS:
        text = (REPO_ROOT / document).read_text(encoding="utf-8")
        for number, line in _code_lines(text):
            words = _command_words(line)
            if words is not None:
                found.append(CommandLine(f"{document}:{number}", tuple(words), inline=False))
        prose = "\n".join(
            "" if FENCE.match(line) else line for line in _outside_fences(text).splitlines()
        )
        for match in INLINE.finditer(prose):
            span = " ".join(match.group(1).split())
            words = _command_words(span)
            if words is not None:
                number = prose.count("\n", 0, match.start()) + 1
                found.append(CommandLine(f"{document}:{number}", tuple(words), inline=True))
    return found


def _outside_fences(text: str) -> str:
    """The text with fenced blocks blanked out (line numbers kept)."""
    kept, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            kept.append("")
            continue
        kept.append("" if in_fence else line)
    return "\n".join(kept)


# A synopsis's placeholders for options that take a typed value, and a value of that type.
SAMPLES = {"--port": "8080", "--metrics-address": "127.0.0.1:9100"}
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_:]*")


def variants(words: tuple[str, ...]) -> list[list[str]]:
    """A synopsis as command lines: brackets and `...` removed, typed placeholders given a
    sample, and each `a|b` word tried with every alternative (the others at their first)."""
    plain = [word.replace("[", "").replace("]", "") for word in words]
    plain = [word for word in plain if word and word != "..."]
    if any("[" in word for word in words):
        plain = [
            SAMPLES[plain[index - 1]]
            if index and plain[index - 1] in SAMPLES and PLACEHOLDER.fullmatch(word)
            else word
            for index, word in enumerate(plain)
        ]
    choices = [word.split("|") if "|" in word else [word] for word in plain]
    first = [options[0] for options in choices]
    lines = [first]
    for index, options in enumerate(choices):
        for option in options[1:]:
            lines.append([*first[:index], option, *first[index + 1 :]])
    return lines


def parse_error(words: list[str]) -> str | None:
    """The parser's complaint about `healthnode WORDS`, or None if it parses."""
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(words)
        except SystemExit as stopped:
            if stopped.code not in (0, None):
                return errors.getvalue().strip() or f"exit {stopped.code}"
    return None


LINES = command_lines()


def test_the_documents_hold_command_lines_to_check() -> None:
    # The extraction finds what the documents are known to show (so the check below cannot
    # pass by finding nothing).
    places = {line.where.split(":")[0] for line in LINES if not line.inline}
    assert places == set(DOCUMENTS), places
    shown = {line.words[:2] for line in LINES if not line.inline}
    for expected in (("serve", "--no-workers"), ("worker", "--config"), ("keys", "rotate")):
        assert expected in shown, sorted(shown)
    assert len(LINES) >= 40, len(LINES)


@pytest.mark.parametrize("line", LINES, ids=lambda line: f"{line.where} {' '.join(line.words)}")
def test_every_documented_command_line_parses(line: CommandLine) -> None:
    for words in variants(line.words):
        error = parse_error(words)
        if error is not None and line.inline and "arguments are required" in error:
            continue  # prose naming a command without its arguments
        assert error is None, f"{line.where}: healthnode {' '.join(words)}\n{error}"


@pytest.mark.parametrize(
    ("text", "parses"),
    [
        ("healthnode member list --data-dir /srv/data", True),
        ("sudo -u healthnode /opt/healthnode/.venv/bin/healthnode migrate --config F", True),
        ("healthnode member list --no-such-option", False),
        ("healthnode backup", False),
        ("15 3 * * * /opt/healthnode/.venv/bin/healthnode backup /b/x.tar --data-dir /d", True),
        ("healthnode serve --port eighty", False),
    ],
)
def test_the_check_tells_a_wrong_line_from_a_right_one(text: str, parses: bool) -> None:
    words = _command_words(text)
    assert words is not None
    assert (parse_error(words) is None) is parses
    # And other commands are not taken for it
    assert _command_words("sudo -u healthnode createdb --owner healthnode healthnode") is None
    assert _command_words("useradd --system healthnode") is None


def test_the_configuration_files_shown_load(tmp_path: Path) -> None:
    # Given every TOML block of docs/OPERATIONS.md, written as a file given with --config
    text = (REPO_ROOT / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```toml\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert blocks
    for number, block in enumerate(blocks):
        config = tmp_path / f"shown-{number}.toml"
        config.write_text(block, encoding="utf-8")
        config.chmod(0o600)
        # When the configuration is read from it, Then it is valid, and what it says applies
        configuration = load_configuration(config_file=config, environ={})
        assert configuration.file_read
        assert configuration.settings.domain == "health.example.org"
        assert configuration.metrics_address == ("127.0.0.1", 9101)
        assert [str(net) for net in configuration.settings.trusted_proxies] == [
            "127.0.0.1/32",
            "::1/128",
        ]
