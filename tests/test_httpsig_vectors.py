"""HTTP signatures against published vectors (draft-cavage-12 Appendix C, RFC 9421 Appendix B)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from federation import httpsig

VECTORS = Path(__file__).parent / "vectors"  # public test data; see vectors/README.md

CAVAGE_HEADERS = {
    "host": "example.com",
    "date": "Sun, 05 Jan 2014 21:31:40 GMT",
    "content-type": "application/json",
    "digest": "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=",
    "content-length": "18",
}
CAVAGE_BODY = b'{"hello": "world"}'
CAVAGE_CASES = {
    ("date",): "SjWJWbWN7i0wzBvtPl8rbASWz5xQW6mcJmn+ibttBqtifLN7Sazz6m79cNfwwb8DMJ5cou1s7uEGKKCs+FLEEaDV5lp7q25WqS+lavg7T8hc0GppauB6hbgEKTwblDHYGEtbGmtdHgVCk9SuS13F0hZ8FD0k/5OxEPXe5WozsbM=",
    ("(request-target)", "host", "date"): "qdx+H7PHHDZgy4y/Ahn9Tny9V3GP6YgBPyUXMmoxWtLbHpUnXS2mg2+SbrQDMCJypxBLSPQR2aAjn7ndmw2iicw3HMbe8VfEdKFYRqzic+efkb3nndiv/x1xSHDJWeSWkx3ButlYSuBskLu6kd9Fswtemr3lgdDEmn04swr2Os0=",
    (
        "(request-target)", "host", "date", "content-type", "digest", "content-length",
    ): "vSdrb+dS3EceC9bcwHSo4MlyKS59iFIrhgYkz8+oVLEEzmYZZvRs8rgOp+63LEM3v+MFHB32NfpB2bEKBIvB1q52LaEUHFv120V01IL+TAD48XaERZFukWgHoBTLMhYS2Gb51gWxpeIq8knRmPnYePbF5MOkR0Zkly4zKH7s1dE=",
}  # fmt: skip


def _private(name: str) -> object:
    return serialization.load_pem_private_key((VECTORS / name).read_bytes(), password=None)


def _public(name: str) -> object:
    return serialization.load_pem_public_key((VECTORS / name).read_bytes())


def test_cavage_digest_of_the_appendix_body() -> None:
    assert httpsig.digest_header(CAVAGE_BODY) == CAVAGE_HEADERS["digest"]


@pytest.mark.parametrize("covered", list(CAVAGE_CASES))
def test_cavage_appendix_c_signatures_byte_for_byte(covered: tuple[str, ...]) -> None:
    key = _private("cavage_test_private.pem")
    assert isinstance(key, rsa.RSAPrivateKey)
    text = httpsig.cavage_signing_string(
        "POST", "/foo?param=value&pet=dog", CAVAGE_HEADERS, covered
    )
    produced = key.sign(text.encode(), padding.PKCS1v15(), httpsig.hashes.SHA256())
    assert base64.b64encode(produced).decode() == CAVAGE_CASES[covered]


@pytest.mark.parametrize("covered", list(CAVAGE_CASES))
def test_cavage_appendix_c_signatures_verify(covered: tuple[str, ...]) -> None:
    header = (
        f'keyId="Test",algorithm="rsa-sha256",headers="{" ".join(covered)}",'
        f'signature="{CAVAGE_CASES[covered]}"'
    )
    parsed = httpsig.parse_cavage_signature(header)
    httpsig.verify_cavage(
        parsed,
        method="POST",
        path_and_query="/foo?param=value&pet=dog",
        headers=CAVAGE_HEADERS,
        public_key=_public("cavage_test_public.pem"),  # type: ignore[arg-type]
    )
    with pytest.raises(httpsig.SignatureMismatch):
        httpsig.verify_cavage(
            parsed,
            method="POST",
            path_and_query="/foo?param=value&pet=cat",
            headers=CAVAGE_HEADERS | {"date": "Sun, 05 Jan 2014 21:31:41 GMT"},
            public_key=_public("cavage_test_public.pem"),  # type: ignore[arg-type]
        )


RFC_URL = "https://example.com/foo?param=Value&Pet=dog"
RFC_HEADERS = {
    "host": "example.com",
    "date": "Tue, 20 Apr 2021 02:07:55 GMT",
    "content-type": "application/json",
    "content-digest": "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
    "content-length": "18",
}  # fmt: skip


def test_rfc9421_b26_ed25519_signature_byte_for_byte() -> None:
    signature_input = (
        'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
        ';created=1618884473;keyid="test-key-ed25519"'
    )
    expected = (
        "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
    )
    [parsed] = httpsig.parse_message_signatures(signature_input, f"sig-b26=:{expected}:")
    base = httpsig.message_signature_base(parsed, method="POST", url=RFC_URL, headers=RFC_HEADERS)
    key = _private("test-key-ed25519.key")
    assert base64.b64encode(key.sign(base.encode())).decode() == expected  # type: ignore[attr-defined]
    httpsig.verify_message_signature(
        parsed,
        method="POST",
        url=RFC_URL,
        headers=RFC_HEADERS,
        public_key=_public("test-key-ed25519.pem"),  # type: ignore[arg-type]
    )
    with pytest.raises(httpsig.SignatureMismatch):
        httpsig.verify_message_signature(
            parsed,
            method="PUT",
            url=RFC_URL,
            headers=RFC_HEADERS,
            public_key=_public("test-key-ed25519.pem"),  # type: ignore[arg-type]
        )


def test_rfc9421_content_digest_of_the_appendix_body() -> None:
    covered = ("content-digest",)
    httpsig.check_signed_digests(CAVAGE_BODY, RFC_HEADERS, covered)
    with pytest.raises(httpsig.SignatureMismatch):
        httpsig.check_signed_digests(b'{"hello": "world!"}', RFC_HEADERS, covered)


def test_our_signed_post_verifies_and_covers_what_peers_require() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = b'{"type": "Create"}'
    headers = httpsig.sign_cavage(
        method="POST",
        url="https://peer.example/inbox",
        body=body,
        key_id="https://us.example/g/t1d#main-key",
        private_key=key,
        now=datetime(2026, 11, 1, 12, 0, tzinfo=UTC),
    )
    assert headers["Date"] == "Sun, 01 Nov 2026 12:00:00 GMT"
    parsed = httpsig.parse_cavage_signature(headers["Signature"])
    assert parsed.headers == ("(request-target)", "host", "date", "digest")
    lowered = {name.lower(): value for name, value in headers.items()}
    httpsig.check_signed_digests(body, lowered, parsed.headers)
    httpsig.verify_cavage(
        parsed,
        method="POST",
        path_and_query="/inbox",
        headers=lowered,
        public_key=key.public_key(),
    )


@pytest.mark.parametrize(
    "header",
    [
        "",
        "keyId=unquoted",
        'keyId="a",headers="date"',
        'signature="AAAA"',
        'keyId="a",signature="not base64!"',
    ],
)
def test_malformed_cavage_headers_are_told_apart(header: str) -> None:
    with pytest.raises(httpsig.MalformedSignature):
        httpsig.parse_cavage_signature(header)
