"""The nginx site docs/OPERATIONS.md gives, as written, in front of a real node: `nginx -t`
accepts it, plain HTTP is sent to HTTPS, and HTTPS reaches the node with the client's host and
nginx's request id. Only what a test machine must differ in is changed: the ports, the
certificate (self-signed, made here), the IPv6 listens (the test binds 127.0.0.1 only), and the
node's port in the upstream."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import shutil
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import NodeFactory
from tests.federation_harness import eventually, free_port
from web.app import create_app

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "OPERATIONS.md"
DOMAIN = "health.example.org"

pytestmark = pytest.mark.skipif(
    not os.path.exists(NGINX) and os.environ.get("CI") != "true",
    reason="nginx is not installed (.ci/run installs nginx-light under CI)",
)


def documented_site() -> str:
    blocks = re.findall(r"```nginx\n(.*?)```", OPERATIONS.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "docs/OPERATIONS.md should hold one nginx site"
    return blocks[0]


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAIN)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(DOMAIN)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    chain, private = directory / "fullchain.pem", directory / "privkey.pem"
    chain.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return chain, private


@dataclass(frozen=True)
class Proxy:
    config: Path
    prefix: Path
    http_port: int
    https_port: int


def write_proxy(directory: Path, node_port: int) -> Proxy:
    """The documented site with the test machine's ports and certificate, in a main
    configuration of nginx's that keeps every file it writes under `directory`."""
    chain, private = self_signed(directory)
    http_port, https_port = free_port(), free_port()
    site = documented_site()
    replacements = {
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{node_port};",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        f"/etc/letsencrypt/live/{DOMAIN}/fullchain.pem": str(chain),
        f"/etc/letsencrypt/live/{DOMAIN}/privkey.pem": str(private),
        "root /var/www/html;": f"root {directory};",
    }
    for old, new in replacements.items():
        assert old in site, f"the documented site no longer holds {old!r}"
        site = site.replace(old, new)
    site = "\n".join(line for line in site.splitlines() if "listen [::]" not in line)
    (directory / "site.conf").write_text(site, encoding="utf-8")
    temp = {name: directory / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    main = f"""
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {directory}/site.conf;
}}
"""
    config = directory / "nginx.conf"
    config.write_text(main, encoding="utf-8")
    return Proxy(config, directory, http_port, https_port)


async def run(*command: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, out.decode()


@pytest.fixture
async def proxied_node(make_node: NodeFactory, tmp_path: Path) -> AsyncIterator[Proxy]:
    """A node on 127.0.0.1 that trusts nginx there, and the documented nginx in front of it."""
    node = await make_node(
        "behind_nginx", domain=DOMAIN, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),)
    )
    node_port = free_port()
    runner = web.AppRunner(create_app(node, run_workers=False))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", node_port).start()
    directory = tmp_path / "nginx"
    directory.mkdir()
    proxy = write_proxy(directory, node_port)
    try:
        yield proxy
    finally:
        await runner.cleanup()


async def test_the_documented_site_passes_nginx_t(proxied_node: Proxy) -> None:
    code, out = await run(
        NGINX, "-t", "-c", str(proxied_node.config), "-p", str(proxied_node.prefix)
    )
    assert code == 0, out
    assert "test is successful" in out


async def test_the_documented_site_serves_the_node_over_https(proxied_node: Proxy) -> None:
    # Given nginx running with the documented site in front of the node
    nginx = await asyncio.create_subprocess_exec(
        NGINX, "-c", str(proxied_node.config), "-p", str(proxied_node.prefix),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
    http_base = f"http://127.0.0.1:{proxied_node.http_port}"
    https_base = f"https://127.0.0.1:{proxied_node.https_port}"
    host = {"Host": DOMAIN}
    try:
        async with aiohttp.ClientSession() as http:

            async def listening() -> bool:
                try:
                    async with http.get(f"{http_base}/", headers=host, allow_redirects=False):
                        return True
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(listening, "nginx listening")
            # When a visitor comes by plain HTTP, they are sent to HTTPS on the same path
            async with http.get(f"{http_base}/help", headers=host, allow_redirects=False) as answer:
                assert answer.status == 301
                assert answer.headers["Location"] == f"https://{DOMAIN}/help"
            # When they come by HTTPS, offering a request id of their own
            for path in ("/readyz", "/help"):
                async with http.get(
                    https_base + path, headers={**host, "X-Request-Id": "chosen-1"}, ssl=insecure
                ) as answer:
                    # Then the node answers through nginx, which passed the host on
                    body = await answer.text()
                    assert answer.status == 200, body
                    # And the id is nginx's own, kept by the node, never the one offered
                    request_id = answer.headers["X-Request-Id"]
                    assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id
            assert "Crisis help" in body
    finally:
        nginx.terminate()
        _, errors = await asyncio.wait_for(nginx.communicate(), timeout=30)
        assert b"[emerg]" not in errors, errors
