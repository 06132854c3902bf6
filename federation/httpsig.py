"""HTTP message signatures, as pure functions: no I/O, no clock, no key look-up.

Two families are understood:
- draft-cavage-http-signatures-12 (`Signature:` header, `rsa-sha256` / `hs2019`), which the
  fediverse has used for years; signed GETs use it, and deliveries to servers that refuse
  RFC 9421.
- RFC 9421 (`Signature-Input:` + `Signature:`), which Mastodon now reads and sends; we verify
  it, and deliveries are signed with it first (see federation/knock.py).

Errors split in two: `MalformedSignature` (the request is wrong: 400) and `SignatureMismatch`
(it does not verify: 401).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


class SignatureError(Exception):
    pass


class MalformedSignature(SignatureError):
    """The signature headers cannot be parsed or miss what we require (HTTP 400)."""


class SignatureMismatch(SignatureError):
    """The signature, digest or key does not check out (HTTP 401)."""


# ---------------------------------------------------------------- digests


def digest_header(body: bytes) -> str:
    """The `Digest` header value (RFC 3230) that draft-cavage peers expect."""
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()


def content_digest_header(body: bytes) -> str:
    """The `Content-Digest` header value (RFC 9530)."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


_DIGEST_ALGORITHMS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
DIGEST_HEADERS = ("digest", "content-digest")


def check_signed_digests(body: bytes, headers: Mapping[str, str], covered: Iterable[str]) -> None:
    """Check the digest headers the signature covers, and only those (`headers` maps
    lower-case names to values). Each must name an algorithm we compute (SHA-256, SHA-512),
    and every value it gives in one must match the body. An unsigned digest header proves
    nothing, so it is never read: a signed one we cannot check is refused, not passed over
    for another that anyone could have added."""
    signed = [name for name in DIGEST_HEADERS if name in set(covered)]
    if not signed:
        raise MalformedSignature("the signature covers no Digest or Content-Digest")
    for name in signed:
        if name not in headers:
            raise MalformedSignature(f"the signed header {name!r} is missing")
        given = (
            _parse_byte_sequence_dictionary(headers[name])
            if name == "content-digest"
            else _parse_instance_digests(headers[name])
        )
        label = "Content-Digest" if name == "content-digest" else "Digest"
        checkable = {algorithm: value for algorithm, value in given.items()
                     if algorithm in _DIGEST_ALGORITHMS}  # fmt: skip
        if not checkable:
            raise SignatureMismatch(f"the signed {label} has no SHA-256 or SHA-512 value")
        for algorithm, value in checkable.items():
            if _DIGEST_ALGORITHMS[algorithm](body).digest() != value:
                raise SignatureMismatch(f"{label} does not match the body")


def _parse_instance_digests(value: str) -> dict[str, bytes]:
    """An RFC 3230 `Digest` header: `ALGORITHM=base64` pairs, separated by commas."""
    result: dict[str, bytes] = {}
    for item in value.split(","):
        name, separator, encoded = item.strip().partition("=")
        if not separator:
            raise MalformedSignature("Digest members must be ALGORITHM=value")
        result[name.strip().lower()] = _b64decode(encoded.strip())
    return result


def _parse_byte_sequence_dictionary(value: str) -> dict[str, bytes]:
    result: dict[str, bytes] = {}
    for member in _split_top_level(value):
        name, _, raw = member.partition("=")
        raw = raw.split(";", 1)[0].strip()
        if not (raw.startswith(":") and raw.endswith(":") and len(raw) >= 2):
            raise MalformedSignature("Content-Digest members must be byte sequences")
        result[name.strip().lower()] = _b64decode(raw[1:-1])
    return result


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise MalformedSignature("invalid base64 in a signature header") from None


# ---------------------------------------------------------------- draft-cavage


@dataclass(frozen=True)
class CavageSignature:
    key_id: str
    algorithm: str
    headers: tuple[str, ...]
    signature: bytes
    created: int | None = None
    expires: int | None = None


_CAVAGE_PARAM = re.compile(r'\s*([a-zA-Z]+)\s*=\s*(?:"([^"]*)"|([0-9.]+))\s*(?:,|$)')


def parse_cavage_signature(value: str) -> CavageSignature:
    params: dict[str, str] = {}
    position = 0
    while position < len(value):
        match = _CAVAGE_PARAM.match(value, position)
        if not match:
            raise MalformedSignature('Signature header is not a list of name="value" pairs')
        params[match.group(1).lower()] = (
            match.group(2) if match.group(2) is not None else match.group(3)
        )
        position = match.end()
    if "keyid" not in params or "signature" not in params:
        raise MalformedSignature("Signature header lacks keyId or signature")
    headers = tuple(params.get("headers", "date").lower().split())
    try:
        created = int(params["created"]) if "created" in params else None
        expires = int(float(params["expires"])) if "expires" in params else None
    except ValueError:
        raise MalformedSignature("created and expires must be integers") from None
    return CavageSignature(
        key_id=params["keyid"],
        algorithm=params.get("algorithm", "hs2019").lower(),
        headers=headers,
        signature=_b64decode(params["signature"]),
        created=created,
        expires=expires,
    )


def cavage_signing_string(
    method: str,
    path_and_query: str,
    headers: Mapping[str, str],
    covered: tuple[str, ...],
    created: int | None = None,
    expires: int | None = None,
) -> str:
    """Build the string to sign. `headers` maps lower-case names to values."""
    lines = []
    for name in covered:
        if name == "(request-target)":
            lines.append(f"(request-target): {method.lower()} {path_and_query}")
        elif name == "(created)":
            if created is None:
                raise MalformedSignature("(created) is covered but not given")
            lines.append(f"(created): {created}")
        elif name == "(expires)":
            if expires is None:
                raise MalformedSignature("(expires) is covered but not given")
            lines.append(f"(expires): {expires}")
        else:
            if name not in headers:
                raise MalformedSignature(f"the signed header {name!r} is missing")
            lines.append(f"{name}: {headers[name].strip()}")
    return "\n".join(lines)


def sign_cavage(
    *,
    method: str,
    url: str,
    body: bytes | None,
    key_id: str,
    private_key: PrivateKeyTypes,
    now: datetime,
    extra_headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Headers for a signed request: Host, Date, Digest (with a body) and Signature.

    POSTs cover `(request-target) host date digest`; GETs `(request-target) host date`.
    """
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise TypeError("draft-cavage signing here is rsa-sha256 only")
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {k.lower(): v for k, v in (extra_headers or {}).items()}
    headers["host"] = parts.netloc
    headers["date"] = format_datetime(now.astimezone(UTC), usegmt=True)
    covered: tuple[str, ...] = ("(request-target)", "host", "date")
    if body is not None:
        headers["digest"] = digest_header(body)
        covered += ("digest",)
    text = cavage_signing_string(method, path, headers, covered)
    signature = private_key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    headers["signature"] = (
        f'keyId="{key_id}",algorithm="rsa-sha256",headers="{" ".join(covered)}",'
        f'signature="{base64.b64encode(signature).decode()}"'
    )
    return {
        "Host": headers["host"],
        "Date": headers["date"],
        **({"Digest": headers["digest"]} if body is not None else {}),
        "Signature": headers["signature"],
    }


def verify_cavage(
    signature: CavageSignature,
    *,
    method: str,
    path_and_query: str,
    headers: Mapping[str, str],
    public_key: PublicKeyTypes,
) -> None:
    text = cavage_signing_string(
        method, path_and_query, headers, signature.headers, signature.created, signature.expires
    )
    verify_with_key(public_key, signature.signature, text.encode(), signature.algorithm)


# ---------------------------------------------------------------- RFC 9421


@dataclass(frozen=True)
class MessageSignature:
    label: str
    components: tuple[str, ...]
    params_text: str
    key_id: str
    algorithm: str | None
    created: int | None
    expires: int | None
    signature: bytes


def _split_top_level(value: str) -> list[str]:
    """Split a structured-field dictionary on commas outside strings and inner lists."""
    members, depth, quoted, start = [], 0, False, 0
    index = 0
    while index < len(value):
        char = value[index]
        if quoted:
            if char == "\\":
                index += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            members.append(value[start:index].strip())
            start = index + 1
        index += 1
    tail = value[start:].strip()
    if tail:
        members.append(tail)
    return [member for member in members if member]


_INNER_LIST = re.compile(r'^\(((?:\s*"[^"\\]*"\s*)*)\)((?:;[a-z0-9_.*-]+(?:=[^;]*)?)*)$')
_PARAM = re.compile(r';([a-z0-9_.*-]+)(?:=("(?:[^"\\]|\\.)*"|-?\d+|[A-Za-z*][^;]*))?')


def parse_message_signatures(signature_input: str, signature: str) -> list[MessageSignature]:
    signatures: dict[str, bytes] = {}
    for member in _split_top_level(signature):
        label, _, raw = member.partition("=")
        raw = raw.strip()
        if not (raw.startswith(":") and raw.endswith(":")):
            raise MalformedSignature("Signature members must be byte sequences")
        signatures[label.strip()] = _b64decode(raw[1:-1])
    parsed = []
    for member in _split_top_level(signature_input):
        label, _, raw = member.partition("=")
        label, raw = label.strip(), raw.strip()
        match = _INNER_LIST.match(raw)
        if not match:
            raise MalformedSignature(f"Signature-Input {label!r} is not an inner list")
        components = tuple(re.findall(r'"([^"]*)"', match.group(1)))
        params: dict[str, str] = {}
        for name, param_value in _PARAM.findall(match.group(2)):
            params[name] = param_value.strip('"') if param_value else ""
        if label not in signatures:
            raise MalformedSignature(f"no Signature for the label {label!r}")
        if "keyid" not in params:
            raise MalformedSignature(f"Signature-Input {label!r} has no keyid")
        try:
            created = int(params["created"]) if "created" in params else None
            expires = int(params["expires"]) if "expires" in params else None
        except ValueError:
            raise MalformedSignature("created and expires must be integers") from None
        parsed.append(
            MessageSignature(
                label=label,
                components=components,
                params_text=raw,
                key_id=params["keyid"],
                algorithm=params.get("alg"),
                created=created,
                expires=expires,
                signature=signatures[label],
            )
        )
    if not parsed:
        raise MalformedSignature("Signature-Input names no signature")
    return parsed


def message_signature_base(
    signature: MessageSignature, *, method: str, url: str, headers: Mapping[str, str]
) -> str:
    """The signature base (RFC 9421 section 2.5). `headers` maps lower-case names to values."""
    parts = urlsplit(url)
    derived = {
        "@method": method.upper(),
        "@target-uri": url,
        "@authority": parts.netloc.lower(),
        "@scheme": parts.scheme.lower(),
        "@request-target": (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        "@path": parts.path or "/",
        "@query": f"?{parts.query}",
    }
    lines = []
    for component in signature.components:
        if component.startswith("@"):
            if component not in derived:
                raise MalformedSignature(f"unsupported derived component {component!r}")
            value = derived[component]
        else:
            if component not in headers:
                raise MalformedSignature(f"the signed header {component!r} is missing")
            value = headers[component].strip()
        lines.append(f'"{component}": {value}')
    lines.append(f'"@signature-params": {signature.params_text}')
    return "\n".join(lines)


def verify_message_signature(
    signature: MessageSignature,
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    public_key: PublicKeyTypes,
) -> None:
    base = message_signature_base(signature, method=method, url=url, headers=headers)
    verify_with_key(public_key, signature.signature, base.encode(), signature.algorithm)


def sign_message_signature(
    *,
    method: str,
    url: str,
    body: bytes | None,
    key_id: str,
    private_key: PrivateKeyTypes,
    now: datetime,
    label: str = "sig1",
    components: tuple[str, ...] | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """RFC 9421 headers for a request: `Content-Digest` (with a body), `Signature-Input` and
    `Signature`, with `created`, `keyid` and `alg` (`rsa-v1_5-sha256` for an RSA key,
    `ed25519` for an Ed25519 one).

    By default a request with a body covers `"@method" "@target-uri" "content-digest"` (what
    our inbox requires), one without `"@method" "@target-uri"`. `components` may name other
    derived components, or headers given in `extra_headers`. Deliveries use it through
    FederationClient.post_signed.
    """
    if isinstance(private_key, rsa.RSAPrivateKey):
        algorithm = "rsa-v1_5-sha256"
    elif isinstance(private_key, ed25519.Ed25519PrivateKey):
        algorithm = "ed25519"
    else:
        raise TypeError("RFC 9421 signing here is rsa-v1_5-sha256 or ed25519 only")
    if not re.fullmatch(r"[a-z*][a-z0-9_.*-]*", label):
        raise ValueError(f"{label!r} is not a structured-field key")
    if any(char in key_id for char in '"\\') or not key_id.isprintable():
        raise ValueError("a keyid must fit in a structured-field string")
    headers = {name.lower(): value for name, value in (extra_headers or {}).items()}
    answer: dict[str, str] = {}
    if body is not None:
        headers["content-digest"] = answer["Content-Digest"] = content_digest_header(body)
    if components is None:
        components = ("@method", "@target-uri")
        if body is not None:
            components += ("content-digest",)
    inner_list = "(" + " ".join(f'"{component}"' for component in components) + ")"
    params_text = f'{inner_list};created={int(now.timestamp())};keyid="{key_id}";alg="{algorithm}"'
    unsigned = MessageSignature(
        label=label,
        components=components,
        params_text=params_text,
        key_id=key_id,
        algorithm=algorithm,
        created=int(now.timestamp()),
        expires=None,
        signature=b"",
    )
    base = message_signature_base(unsigned, method=method, url=url, headers=headers).encode()
    if isinstance(private_key, rsa.RSAPrivateKey):
        signature = private_key.sign(base, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = private_key.sign(base)
    answer["Signature-Input"] = f"{label}={params_text}"
    answer["Signature"] = f"{label}=:{base64.b64encode(signature).decode()}:"
    return answer


# ---------------------------------------------------------------- keys


def verify_with_key(
    public_key: PublicKeyTypes, signature: bytes, message: bytes, algorithm: str | None
) -> None:
    """Verify with the algorithm the key's type allows; a named algorithm must agree with it."""
    algorithm = (algorithm or "").lower()
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            if algorithm == "rsa-pss-sha512":
                public_key.verify(
                    signature,
                    message,
                    padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64),
                    hashes.SHA512(),
                )
            elif algorithm in ("", "hs2019", "rsa-sha256", "rsa-v1_5-sha256"):
                public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            else:
                raise SignatureMismatch(f"algorithm {algorithm!r} does not fit an RSA key")
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            if algorithm not in ("", "hs2019", "ed25519"):
                raise SignatureMismatch(f"algorithm {algorithm!r} does not fit an Ed25519 key")
            public_key.verify(signature, message)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            if algorithm not in ("", "hs2019", "ecdsa-p256-sha256"):
                raise SignatureMismatch(f"algorithm {algorithm!r} does not fit an EC key")
            if len(signature) == 64:  # RFC 9421 sends r || s, cryptography wants DER
                signature = encode_dss_signature(
                    int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
                )
            public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        else:
            raise SignatureMismatch("unsupported key type")
    except InvalidSignature:
        raise SignatureMismatch("signature does not verify") from None
