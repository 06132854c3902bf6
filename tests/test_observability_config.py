"""The metrics address and the log format are configuration keys like every other
(`[observability]` metrics_address and log_format, HEALTHNODE_METRICS_ADDRESS and
HEALTHNODE_LOG_FORMAT): the file's value applies, the variable overrides it, the option
overrides both, and a wrong value stops the command with one line and exit status 1.

The commands run as real subprocesses; the served metrics are scraped over loopback HTTP."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import aiohttp

from node.configuration import CONFIG_FILE, KEYS_BY_DOTTED, load_configuration
from tests.federation_harness import eventually, free_port
from tests.test_cli import healthnode_all, ok
from tests.test_delivery_processes import spawn, stop_all, wait_until_serving
from tests.test_metrics import parse, value
from web.metrics import METRICS_PATH


def write(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    path.chmod(0o600)
    return path


def checked(output: str) -> dict[str, tuple[str, str]]:
    """`config check`'s rows: key -> (value, source)."""
    rows = [line.split("\t") for line in output.splitlines()[1:]]
    return {key: (shown, source) for key, shown, source in rows}


async def test_serve_takes_the_metrics_address_and_log_format_from_the_file(
    tmp_path: Path,
) -> None:
    # Given a data dir whose configuration file sets a metrics address and JSON logs, and no
    # option or variable for either
    port, metrics_port = free_port(), free_port()
    data_dir = tmp_path / "data"
    write(
        data_dir / CONFIG_FILE,
        f'[observability]\nmetrics_address = "127.0.0.1:{metrics_port}"\nlog_format = "json"\n',
    )
    base = f"http://127.0.0.1:{port}"
    commands = [
        await spawn("serve", tmp_path, "serve", "--port", str(port), "--data-dir", data_dir)
    ]
    try:
        serve = commands[0]
        await wait_until_serving(serve, base)

        # When a page is asked for and the metrics address is scraped
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/") as page:
                assert page.status == 200
                request_id = page.headers["X-Request-Id"]

            async def scraped() -> str | None:
                try:
                    async with http.get(f"http://127.0.0.1:{metrics_port}{METRICS_PATH}") as got:
                        return await got.text() if got.status == 200 else None
                except aiohttp.ClientError:
                    return None

            exposition = await eventually(scraped, "the metrics at the file's address")

        # Then the metrics are served where the file said, counting the request
        samples = parse(exposition)
        requests = "healthnode_http_requests_total"
        assert value(samples, requests, method="GET", route="/", status="200") >= 1
        await serve.stop(signal.SIGTERM)
        # And the log is JSON lines, the access line carrying the answer's id
        lines = [line for line in serve.output().splitlines() if line.strip()]
        logged = [line for line in lines if not line.startswith("healthnode ")]
        records = [json.loads(line) for line in logged]
        assert any(record.get("request_id") == request_id for record in records), logged
        assert f"healthnode metrics on http://127.0.0.1:{metrics_port}/metrics" in lines
    finally:
        await stop_all(commands)


def test_the_variable_overrides_the_file_and_the_option_overrides_both(tmp_path: Path) -> None:
    # Given a file with both keys
    config = write(
        tmp_path / "node.toml",
        '[observability]\nmetrics_address = "127.0.0.1:9101"\nlog_format = "json"\n',
    )
    storage = ["--config", config, "--data-dir", tmp_path / "data"]

    # When config check runs with the file only, with variables, and with options too
    (from_file,) = healthnode_all(tmp_path, [["config", "check", *storage]])
    variables = {"HEALTHNODE_METRICS_ADDRESS": "[::1]:9102", "HEALTHNODE_LOG_FORMAT": "text"}
    (from_env,) = healthnode_all(tmp_path, [["config", "check", *storage]], env=variables)

    # Then each value comes from the source that wins, and is shown as the file would hold it
    file_rows = checked(ok(from_file))
    assert file_rows["observability.metrics_address"] == ("127.0.0.1:9101", "file")
    assert file_rows["observability.log_format"] == ("json", "file")
    env_rows = checked(ok(from_env))
    assert env_rows["observability.metrics_address"] == (
        "[::1]:9102",
        "environment (HEALTHNODE_METRICS_ADDRESS)",
    )
    assert env_rows["observability.log_format"] == ("text", "environment (HEALTHNODE_LOG_FORMAT)")
    # (config check takes no serving options: the options are read by serve and worker, through
    # the same load as every key)
    configuration = load_configuration(
        config_file=config,
        environ=variables,
        command_line={
            "observability.metrics_address": "10.0.0.5:9201",
            "observability.log_format": "json",
        },
    )
    assert configuration.metrics_address == ("10.0.0.5", 9201)
    assert configuration.log_format == "json"
    assert configuration.source_of(KEYS_BY_DOTTED["observability.metrics_address"]) == (
        "command line (--metrics-address)"
    )
    # And without any of them: no metrics, text logs
    (defaults,) = healthnode_all(tmp_path, [["config", "check", "--data-dir", tmp_path / "none"]])
    default_rows = checked(ok(defaults))
    assert default_rows["observability.metrics_address"] == ("(not set: no metrics)", "default")
    assert default_rows["observability.log_format"] == ("text", "default")


def test_the_metrics_address_is_never_the_public_port_wherever_it_is_set(tmp_path: Path) -> None:
    # Given a file naming a metrics address on the public port of `serve`
    config = write(tmp_path / "node.toml", '[observability]\nmetrics_address = "127.0.0.1:8080"\n')
    storage = ["--config", config, "--data-dir", tmp_path / "data"]

    # When serve starts with it, and again with the same address given as the option
    (refused, overridden) = healthnode_all(
        tmp_path,
        [
            ["serve", "--port", "8080", *storage],
            ["serve", "--port", "8080", "--metrics-address", "127.0.0.1:8080", *storage],
        ],
    )

    # Then the file's address is refused with one line naming where it was set
    assert refused.returncode == 1
    assert refused.error_line() == (
        "healthnode: the metrics address 127.0.0.1:8080 (file) must not use the public port "
        "8080; pick another"
    )
    assert overridden.returncode == 1
    assert "(command line (--metrics-address))" in overridden.error_line()
    assert not (tmp_path / "data").exists()


def test_a_bad_value_is_one_line_and_exit_1(tmp_path: Path) -> None:
    # Given a file with a metrics address that is no address, and one with an unknown format
    no_port = write(tmp_path / "a.toml", '[observability]\nmetrics_address = "9100"\n')
    xml = write(tmp_path / "b.toml", '[observability]\nlog_format = "xml"\n')
    number = write(tmp_path / "c.toml", "[observability]\nmetrics_address = 9100\n")
    data_dir = tmp_path / "untouched"
    storage = ["--data-dir", data_dir]

    # When serve, worker and config check start with them, or with a bad variable
    results = healthnode_all(
        tmp_path,
        [
            ["serve", "--config", no_port, *storage],
            ["worker", "--config", xml, *storage],
            ["config", "check", "--config", number, *storage],
        ],
    )
    (from_env,) = healthnode_all(
        tmp_path, [["worker", *storage]], env={"HEALTHNODE_LOG_FORMAT": "yaml"}
    )

    # Then each exits 1 with one line naming the key or variable and what it takes
    expected = [
        f"healthnode: observability.metrics_address in {no_port}: '9100' is not HOST:PORT "
        "(for example 127.0.0.1:9100)",
        f"healthnode: observability.log_format in {xml}: must be text or json, not 'xml'",
        f"healthnode: observability.metrics_address in {number} must be a string, not int",
    ]
    for result, line in zip(results, expected, strict=True):
        assert result.returncode == 1, result
        assert result.error_line() == line
        assert result.stdout == ""
    assert from_env.returncode == 1
    assert from_env.error_line() == (
        "healthnode: HEALTHNODE_LOG_FORMAT: must be text or json, not 'yaml'"
    )
    # And nothing was opened or written
    assert not data_dir.exists()
