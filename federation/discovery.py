"""Discovery documents (WebFinger, NodeInfo 2.1, host-meta) and resolving remote handles.

The builders are pure: they take the settings and names already looked up, and mint every IRI
through node.ids, so the `self` links they publish are exactly the ids actors are served at
(Mastodon refuses an actor whose WebFinger `self` href does not loop back to its id).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import quoteattr

from federation.client import FederationClient, FetchError, Signer
from node.config import RegistrationMode, Settings, is_loopback_domain, validate_domain
from node.identity import NodeIdentity
from node.ids import WEBFINGER_PATH, GroupRef, InstanceActorRef, Iris, MemberRef

Kind = Literal["member", "group", "instance"]

SOFTWARE_NAME = "healthnode"
JRD_CONTENT_TYPE = "application/jrd+json"
WEBFINGER_ACCEPT = "application/jrd+json, application/json"
NODEINFO_21_REL = "http://nodeinfo.diaspora.software/ns/schema/2.1"
NODEINFO_21_PROFILE = 'application/json; profile="http://nodeinfo.diaspora.software/ns/schema/2.1#"'
APPLICATION_ACTOR_REL = "https://www.w3.org/ns/activitystreams#Application"
PROFILE_PAGE_REL = "http://webfinger.net/rel/profile-page"
SUBSCRIBE_REL = "http://ostatus.org/schema/1.0/subscribe"
AS_TYPE_PROPERTY = "https://www.w3.org/ns/activitystreams#type"
AS_NAMESPACE = "https://www.w3.org/ns/activitystreams"
ACTIVITY_JSON = "application/activity+json"
XRD_NAMESPACE = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
# RFC 7033 puts no limit on a resource; ours keeps absurd query strings out of look-ups.
MAX_RESOURCE_LENGTH = 512

AS_TYPE_OF: dict[Kind, str] = {"member": "Person", "group": "Group", "instance": "Application"}


class MalformedResource(ValueError):
    """The resource is not an acct: URI, a bare handle or an http(s) IRI (answered with 400)."""


@dataclass(frozen=True)
class LocalName:
    """A WebFinger resource that names something on this node.

    `kind` is None for acct: names, which may be a member or a group (they share one namespace);
    an IRI already says which.
    """

    name: str
    kind: Kind | None


def actor_iri(settings: Settings, kind: Kind, name: str) -> str:
    iris = Iris(settings.base_url)
    if kind == "member":
        return iris.member(name)
    if kind == "group":
        return iris.group(name)
    return iris.instance_actor()


def webfinger_document(settings: Settings, kind: Kind, name: str) -> dict[str, Any]:
    """The JRD for one local actor; for the instance actor `name` is the domain itself."""
    iri = actor_iri(settings, kind, name)
    links: list[dict[str, Any]] = [
        {"rel": PROFILE_PAGE_REL, "type": "text/html", "href": iri},
        {
            "rel": "self",
            "type": ACTIVITY_JSON,
            "href": iri,
            "properties": {AS_TYPE_PROPERTY: AS_TYPE_OF[kind]},
        },
    ]
    if kind != "instance":
        # Remote follow: a visitor's own server sends them to this template with the IRI.
        links.append(
            {
                "rel": SUBSCRIBE_REL,
                "template": Iris(settings.base_url).authorize_interaction_template(),
            }
        )
    return {"subject": f"acct:{name}@{settings.domain}", "aliases": [iri], "links": links}


def _is_plain_text(text: str) -> bool:
    return bool(text) and text.isprintable() and not any(ch.isspace() for ch in text)


def read_resource(resource: str, settings: Settings) -> LocalName | None:
    """What a WebFinger `resource` names here; None when it belongs to another server.

    Raises MalformedResource for text that is no resource at all, so that the caller can tell
    a client's mistake (400) from a name it simply does not know (404).
    """
    if len(resource) > MAX_RESOURCE_LENGTH or not _is_plain_text(resource):
        raise MalformedResource("the resource must be one line of printable text")
    lowered = resource.lower()
    if lowered.startswith(("https://", "http://")):
        return _read_iri(resource, settings)
    if lowered.startswith("acct:"):
        handle = resource[len("acct:") :]
    else:
        # People paste handles as they are shown: @person@domain, !group@domain.
        handle = resource[1:] if resource[:1] in ("@", "!") else resource
    # rpartition: the instance's own name is its domain, which may carry a port but no `@`.
    name, at, domain = handle.rpartition("@")
    if not at or not name or not domain or "@" in name or any(c in name for c in "/?#"):
        raise MalformedResource("give acct:name@domain, name@domain or an actor IRI")
    try:
        domain = validate_domain(domain)
    except ValueError:
        raise MalformedResource("the domain of the resource is not a host name") from None
    if domain != settings.domain.lower():
        return None
    name = name.lower()
    if name == domain:
        return LocalName(settings.domain, "instance")
    return LocalName(name, None)


def _read_iri(resource: str, settings: Settings) -> LocalName | None:
    try:
        parts = urlsplit(resource)
    except ValueError:  # an unbalanced [IPv6] bracket
        raise MalformedResource("the resource is not a valid IRI") from None
    if not parts.netloc or parts.username is not None or parts.password is not None:
        raise MalformedResource("the resource is not a valid IRI")
    match Iris(settings.base_url).parse_local(resource):
        case InstanceActorRef():
            return LocalName(settings.domain, "instance")
        case MemberRef(username):
            return LocalName(username, "member")
        case GroupRef(slug):
            return LocalName(slug, "group")
    return None


@lru_cache(maxsize=1)
def software_version() -> str:
    try:
        return importlib.metadata.version(SOFTWARE_NAME)
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"  # run from a source tree that was never installed


def nodeinfo_links(settings: Settings) -> dict[str, Any]:
    return {
        "links": [
            {"rel": NODEINFO_21_REL, "href": Iris(settings.base_url).nodeinfo()},
            # FEP-2677: where to find the application actor without knowing its path.
            {"rel": APPLICATION_ACTOR_REL, "href": Iris(settings.base_url).instance_actor()},
        ]
    }


def nodeinfo_document(
    settings: Settings,
    identity: NodeIdentity,
    *,
    users_total: int,
    active_month: int,
    active_halfyear: int,
    local_posts: int,
) -> dict[str, Any]:
    """NodeInfo 2.1. Its schema forbids unknown keys at every level but `metadata`, and makes
    software.repository and .homepage optional, so they are left out rather than invented."""
    return {
        "version": "2.1",
        "software": {"name": SOFTWARE_NAME, "version": software_version()},
        "protocols": ["activitypub"],
        "services": {"inbound": [], "outbound": []},
        # Registration by approval is not open: NodeInfo's schema means "anyone, now".
        "openRegistrations": identity.registration is RegistrationMode.OPEN,
        "usage": {
            "users": {
                "total": users_total,
                "activeHalfyear": active_halfyear,
                "activeMonth": active_month,
            },
            "localPosts": local_posts,
        },
        # The names Mastodon and Misskey publish the node's own name and description under.
        "metadata": {"nodeName": identity.name, "nodeDescription": identity.description},
    }


def lrdd_template(settings: Settings) -> str:
    return Iris(settings.base_url).webfinger_template()


def host_meta_xml(settings: Settings) -> str:
    # type="application/xrd+xml" although the endpoint answers JRD: that is what Mastodon and
    # Pleroma publish, and the clients that still read host-meta only use the template.
    template = quoteattr(lrdd_template(settings))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<XRD xmlns="{XRD_NAMESPACE}">\n'
        f'  <Link rel="lrdd" type="application/xrd+xml" template={template}/>\n'
        "</XRD>\n"
    )


def host_meta_json(settings: Settings) -> dict[str, Any]:
    return {"links": [{"rel": "lrdd", "template": lrdd_template(settings)}]}


def _is_as2_type(media_type: object) -> bool:
    if not isinstance(media_type, str):
        return False
    main, *params = (part.strip() for part in media_type.split(";"))
    main = main.lower()
    if main == ACTIVITY_JSON:
        return True
    if main != "application/ld+json":
        return False
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "profile" and AS_NAMESPACE in value.strip().strip('"').split():
            return True
    return False


def actor_link(jrd: object) -> str | None:
    """The actor IRI a JRD points at: the last `self` link with an AS2 type, as Mastodon and
    Lemmy both prefer the last one when a name is both a person and a group."""
    links = jrd.get("links") if isinstance(jrd, dict) else None
    found = None
    for link in links if isinstance(links, list) else []:
        if not isinstance(link, dict) or link.get("rel") != "self":
            continue
        href = link.get("href")
        if not _is_as2_type(link.get("type")) or not isinstance(href, str):
            continue
        try:
            parts = urlsplit(href)
        except ValueError:  # remote text, such as an unbalanced [IPv6] bracket
            continue
        if parts.scheme in ("https", "http") and parts.netloc:
            found = href
    return found


def webfinger_url(handle: str, allow_loopback: bool) -> str:
    """The WebFinger query URL for `name@domain`, `@name@domain` or `!name@domain`."""
    text = handle.strip()
    if text[:1] in ("@", "!"):
        text = text[1:]
    name, at, domain = text.partition("@")
    if not at or not name or not _is_plain_text(text) or any(c in name for c in "@/?#"):
        raise FetchError("invalid", f"not a handle of the form name@domain: {handle[:200]!r}")
    try:
        domain = validate_domain(domain)
    except ValueError:
        raise FetchError("invalid", f"not a valid domain in {handle[:200]!r}") from None
    scheme = "http" if allow_loopback and is_loopback_domain(domain) else "https"
    resource = quote(f"acct:{name}@{domain}", safe=":@")
    return f"{scheme}://{domain}{WEBFINGER_PATH}?resource={resource}"


async def resolve_handle(
    client: FederationClient, handle: str, now: datetime, signer: Signer | None = None
) -> str:
    """The actor IRI for a handle, found by an unsigned WebFinger query; a URL is returned as
    given, for the caller to fetch like any other actor."""
    text = handle.strip()
    if text.lower().startswith(("https://", "http://")):
        return text
    url = webfinger_url(text, client.allow_loopback)
    # A domain may hand its WebFinger to another host (example.org -> social.example.org): the
    # answer is only a pointer, and the actor it names is fetched from its own origin.
    jrd = await client.get_json(url, signer, now, accept=WEBFINGER_ACCEPT, other_origins=True)
    found = actor_link(jrd)
    if found is None:
        raise FetchError("invalid", f"WebFinger for {handle[:200]!r} names no ActivityPub actor")
    return found


def handle_host(handle: str) -> str:
    """The server part of `name@server` as typed (for messages), or "" when there is none."""
    text = handle.strip()
    if text.lower().startswith(("https://", "http://")):
        try:
            return urlsplit(text).hostname or ""
        except ValueError:
            return ""
    return text.rpartition("@")[2][:200] if "@" in text.lstrip("@!") else ""


def subscribe_template(jrd: object, allow_loopback: bool) -> str | None:
    """The OStatus subscribe template a JRD advertises (the last one), when it is an http(s)
    URL with a {uri} placeholder: where to send a person to follow something from there.
    Plain http only between development nodes, as for every other address."""
    links = jrd.get("links") if isinstance(jrd, dict) else None
    found = None
    for link in links if isinstance(links, list) else []:
        if not isinstance(link, dict) or link.get("rel") != SUBSCRIBE_REL:
            continue
        template = link.get("template")
        if not isinstance(template, str) or "{uri}" not in template or len(template) > 2048:
            continue
        try:
            parts = urlsplit(template.replace("{uri}", ""))
        except ValueError:
            continue
        schemes = ("https", "http") if allow_loopback else ("https",)
        if parts.scheme in schemes and parts.hostname and "@" not in parts.netloc:
            found = template
    return found


def follow_url(template: str, iri: str) -> str:
    """The subscribe template with `iri` in place of {uri}, percent-encoded whole."""
    return template.replace("{uri}", quote(iri, safe=""))


async def home_subscribe_template(client: FederationClient, handle: str, now: datetime) -> str:
    """The subscribe template of the server `handle` (name@server) lives on, from its
    WebFinger answer about that handle; FetchError ("invalid") when it advertises none."""
    url = webfinger_url(handle, client.allow_loopback)
    jrd = await client.get_json(url, None, now, accept=WEBFINGER_ACCEPT, other_origins=True)
    template = subscribe_template(jrd, client.allow_loopback)
    if template is None:
        raise FetchError("invalid", f"WebFinger for {handle[:200]!r} has no subscribe template")
    return template
