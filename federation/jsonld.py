"""JSON-LD with bundled contexts only: no context is ever fetched.

Most peers send documents in the plain ActivityStreams context, perhaps with inline extension
terms that mean what we think they mean; those take the fast path and are used as they are.
Anything else is expanded with pyld, through a loader that only knows the bundled documents,
and compacted into our canonical context, so the rest of federation/ reads one shape.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from pyld import jsonld

CONTEXTS_DIR = Path(__file__).parent / "contexts"
AS2 = "https://www.w3.org/ns/activitystreams"
SECURITY_V1 = "https://w3id.org/security/v1"
PUBLIC = AS2 + "#Public"
PUBLIC_ALIASES = frozenset({PUBLIC, "as:Public", "Public"})

# Namespaces that peers put in @context although nothing resolvable is published there.
EMPTY_CONTEXTS = frozenset({"http://joinmastodon.org/ns", "https://joinmastodon.org/ns"})
LITEPUB_SUFFIX = "/schemas/litepub-0.1.jsonld"
LEMMY_CONTEXT = "https://join-lemmy.org/context.json"

# This project's own namespace: a name for our extension terms, never dereferenced.
HEALTHNODE_NS = "urn:healthnode:ns#"

EXTENSION_TERMS: dict[str, Any] = {
    "toot": "http://joinmastodon.org/ns#",
    "lemmy": "https://join-lemmy.org/ns#",
    "litepub": "http://litepub.social/ns#",
    "schema": "http://schema.org#",  # as Mastodon, Mbin and WordPress spell it
    "sensitive": "as:sensitive",
    "manuallyApprovesFollowers": "as:manuallyApprovesFollowers",
    "Hashtag": "as:Hashtag",
    "featured": {"@id": "toot:featured", "@type": "@id"},
    "discoverable": "toot:discoverable",
    "indexable": "toot:indexable",
    "postingRestrictedToMods": "lemmy:postingRestrictedToMods",
    "moderators": {"@id": "lemmy:moderators", "@type": "@id"},
    "stickied": "lemmy:stickied",
    "pt": "https://joinpeertube.org/ns#",
    "commentsEnabled": "pt:commentsEnabled",
    "PropertyValue": "schema:PropertyValue",
    "value": "schema:value",
    # Ours (docs/FEDERATION.md, "Verified professionals"): defined here, never fetched.
    "healthnode": HEALTHNODE_NS,
    "verifiedProfessional": "healthnode:verifiedProfessional",
    "title": "healthnode:title",
    "verifier": "healthnode:verifier",
    "verifiedAt": "healthnode:verifiedAt",
}
CANONICAL_CONTEXT: list[Any] = [AS2, SECURITY_V1, EXTENSION_TERMS]

# FEP-521a keys (Multikey in assertionMethod), as the DID, data-integrity and multikey
# contexts define them. Read from other servers' actors, never sent: our own documents keep
# CANONICAL_CONTEXT, and what normalise() answers is in READING_CONTEXT.
KEY_TERMS: dict[str, Any] = {
    "assertionMethod": {"@id": "sec:assertionMethod", "@type": "@id", "@container": "@set"},
    "Multikey": "sec:Multikey",
    "controller": {"@id": "sec:controller", "@type": "@id"},
    "publicKeyMultibase": {"@id": "sec:publicKeyMultibase", "@type": "sec:multibase"},
}
READING_TERMS: dict[str, Any] = {**EXTENSION_TERMS, **KEY_TERMS}
READING_CONTEXT: list[Any] = [AS2, SECURITY_V1, READING_TERMS]

# A stand-in for Pleroma's and Akkoma's per-instance litepub context, built from its terms.
LITEPUB_STAND_IN: dict[str, Any] = {
    "@context": [
        AS2,
        SECURITY_V1,
        {
            "litepub": "http://litepub.social/ns#",
            "toot": "http://joinmastodon.org/ns#",
            "sensitive": "as:sensitive",
            "manuallyApprovesFollowers": "as:manuallyApprovesFollowers",
            "Hashtag": "as:Hashtag",
            "EmojiReact": "litepub:EmojiReact",
            "ChatMessage": "litepub:ChatMessage",
            "directMessage": "litepub:directMessage",
            "invisible": "litepub:invisible",
            "formerRepresentations": "litepub:formerRepresentations",
            "listMessage": {"@id": "litepub:listMessage", "@type": "@id"},
            "oauthRegistrationEndpoint": {
                "@id": "litepub:oauthRegistrationEndpoint",
                "@type": "@id",
            },
            "quoteUrl": "as:quoteUrl",
        },
    ]
}


# A stand-in for Lemmy's published context, from the terms it defines (PieFed sends the same).
LEMMY_STAND_IN: dict[str, Any] = {
    "@context": [
        SECURITY_V1,
        {
            "lemmy": "https://join-lemmy.org/ns#",
            "litepub": "http://litepub.social/ns#",
            "pt": "https://joinpeertube.org/ns#",
            "sc": "http://schema.org/",
            "ChatMessage": "litepub:ChatMessage",
            "commentsEnabled": "pt:commentsEnabled",
            "sensitive": "https://www.w3.org/ns/activitystreams#sensitive",
            "matrixUserId": "lemmy:matrixUserId",
            "postingRestrictedToMods": "lemmy:postingRestrictedToMods",
            "removeData": "lemmy:removeData",
            "stickied": "lemmy:stickied",
            "moderators": {"@type": "@id", "@id": "lemmy:moderators"},
            "expires": "https://www.w3.org/ns/activitystreams#endTime",
            "distinguished": "lemmy:distinguished",
            "language": "sc:inLanguage",
            "identifier": "sc:identifier",
        },
    ]
}
# Context URLs whose meaning we know without processing them.
KNOWN_SAFE_CONTEXTS = frozenset({SECURITY_V1, LEMMY_CONTEXT, *EMPTY_CONTEXTS})


# Bounds on the work of expanding one document (the fast path expands nothing). The real
# documents that need expansion (Pleroma, Misskey, Mbin, WordPress) hold under 150 JSON
# values and take under 10 ms; pyld spends about 65 us a value, so the count refuses a
# hostile document at once, and the time budget stops whatever the count lets through.
EXPANSION_MAX_VALUES = 2_000
EXPANSION_MAX_DEPTH = 32
EXPANSION_SECONDS = 1.0


class InvalidDocument(Exception):
    """The document is not JSON-LD we can read (unknown context, bad structure)."""


class TooComplex(InvalidDocument):
    """The document needs JSON-LD processing and is over its bounds of size, depth or time."""


@lru_cache(maxsize=1)
def _bundled_files() -> dict[str, str]:
    index: dict[str, str] = json.loads((CONTEXTS_DIR / "index.json").read_text())
    return index


@lru_cache(maxsize=32)
def _bundled_document(url: str) -> dict[str, Any] | None:
    normalised = url.rstrip("#")
    if normalised in EMPTY_CONTEXTS:
        return {"@context": {}}
    if normalised.endswith(LITEPUB_SUFFIX):
        return LITEPUB_STAND_IN
    if normalised == LEMMY_CONTEXT:
        return LEMMY_STAND_IN
    files = _bundled_files()
    filename = files.get(normalised) or files.get(normalised.rstrip("/"))
    if filename is None and normalised.startswith("http://"):
        filename = files.get("https://" + normalised[len("http://") :])
    if filename is None:
        return None
    document: dict[str, Any] = json.loads((CONTEXTS_DIR / filename).read_text())
    return document


def load_document(url: str, options: Any = None) -> dict[str, Any]:
    """pyld document loader over the bundled contexts. Nothing is ever fetched: an unknown
    context (Mbin's per-instance one, say) loads as empty, so its terms are dropped."""
    document = _bundled_document(url) or {"@context": {}}
    return {"contentType": "application/ld+json", "contextUrl": None, "documentUrl": url,
            "document": document}  # fmt: skip


def _canonical_terms() -> dict[str, Any]:
    return READING_TERMS


def _is_plain(context: Any) -> bool:
    """Whether the document means what our canonical context says, without processing."""
    if context == AS2:
        return True
    if not isinstance(context, list) or AS2 not in context:
        return False
    known = _canonical_terms()
    for entry in context:
        if entry == AS2:
            continue
        if isinstance(entry, str):
            if entry.rstrip("#") not in KNOWN_SAFE_CONTEXTS:
                return False
        elif isinstance(entry, dict):
            for term, definition in entry.items():
                if term.startswith("@"):
                    return False
                # A redefined core term would change meaning; an unknown term is only ignored.
                if term in known and known[term] != definition:
                    return False
                core = _core_definitions()
                if term not in known and term in core and core[term] != definition:
                    return False
        else:
            return False
    return True


@lru_cache(maxsize=1)
def _core_definitions() -> dict[str, Any]:
    """The terms ActivityStreams and security v1 define, with their definitions: restating
    one exactly (as Mastodon does with alsoKnownAs) keeps a document plain."""
    security = (_bundled_document(SECURITY_V1) or {}).get("@context", {})
    streams = (_bundled_document(AS2) or {}).get("@context", {})
    return {**security, **streams}


def _is_plain_document(document: dict[str, Any]) -> bool:
    """The top-level context, and that of an embedded object if it brings its own."""
    if not _is_plain(document.get("@context")):
        return False
    embedded = document.get("object")
    if isinstance(embedded, dict) and "@context" in embedded:
        return _is_plain_document(embedded)
    return True


def normalise(document: dict[str, Any]) -> dict[str, Any]:
    """The document in our canonical context (READING_CONTEXT: CANONICAL_CONTEXT and the
    FEP-521a key terms): as it is when plain, else expanded and compacted."""
    if not isinstance(document, dict):
        raise InvalidDocument("a JSON-LD document must be an object")
    context = document.get("@context")
    if context is None:
        document = {**document, "@context": AS2}  # AS2 section 4.1: the default context
    elif AS2 not in (context if isinstance(context, list) else [context]):
        # Mbin names only its own context; what it means is ActivityStreams.
        document = {
            **document,
            "@context": [AS2, *(context if isinstance(context, list) else [context])],
        }
    if _is_plain_document(document):
        return document
    _check_bounds(document)
    options = {"documentLoader": load_document}
    processor = _BudgetedProcessor(time.monotonic() + EXPANSION_SECONDS)
    try:
        expanded = processor.expand(document, options)
        compacted: dict[str, Any] = processor.compact(expanded, READING_CONTEXT, options)
    except InvalidDocument:
        raise
    except jsonld.JsonLdError as error:
        raise InvalidDocument(f"cannot process JSON-LD: {_reason(error)}") from None
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as error:
        raise InvalidDocument(f"cannot process JSON-LD: {type(error).__name__}") from None
    compacted = _without_language_tags(compacted)
    compacted["@context"] = READING_CONTEXT
    return compacted


def _check_bounds(document: Any) -> None:
    """Refuse, before any expansion, a document with too many values or nested too deep."""
    values, pending = 0, [(document, 1)]
    while pending:
        value, depth = pending.pop()
        values += 1
        if values > EXPANSION_MAX_VALUES:
            raise TooComplex(
                f"the document needs JSON-LD processing and holds over "
                f"{EXPANSION_MAX_VALUES} values"
            )
        if depth > EXPANSION_MAX_DEPTH:
            raise TooComplex(
                f"the document needs JSON-LD processing and is nested over "
                f"{EXPANSION_MAX_DEPTH} levels deep"
            )
        if isinstance(value, dict):
            pending.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)


class _BudgetedProcessor(jsonld.JsonLdProcessor):  # type: ignore[misc]
    """pyld's processor, stopped when its time is up: contexts can multiply the work of a
    document that passed the count (nested scoped contexts, long lists of terms)."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def _over_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TooComplex(
                f"the document's JSON-LD processing took over {EXPANSION_SECONDS:.0f} s"
            )

    def _expand(self, *args: Any, **kwargs: Any) -> Any:
        self._over_time()
        return super()._expand(*args, **kwargs)

    def _compact(self, *args: Any, **kwargs: Any) -> Any:
        self._over_time()
        return super()._compact(*args, **kwargs)


_LANGUAGE_TAGGED = frozenset({"@value", "@language", "@direction"})


def _without_language_tags(value: Any) -> Any:
    """Strings a context tagged with a default language (Pleroma's {"@language": "und"})
    compact into {"@value": ..., "@language": ...}; our canonical context has no default
    language, so they are read back as the strings they were."""
    if isinstance(value, dict):
        if "@value" in value and value.keys() <= _LANGUAGE_TAGGED:
            return value["@value"]
        return {key: _without_language_tags(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_language_tags(item) for item in value]
    return value


def _reason(error: Exception) -> str:
    cause = getattr(error, "cause", None)
    if isinstance(cause, InvalidDocument):
        return str(cause)
    return str(getattr(error, "code", None) or type(error).__name__)
