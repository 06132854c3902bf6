"""node/ids.py: minting and parsing this node's IRIs, and the routes registered from them."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st

from node import ids
from node.validation import HANDLE_PATTERN
from web import (
    routes_account,
    routes_activitypub,
    routes_crisis,
    routes_dashboard,
    routes_discovery,
    routes_feed,
    routes_group_settings,
    routes_groups,
    routes_moderation,
    routes_qa,
    routes_threads,
)

BASE = "https://hospital.example"
DEV = "http://localhost:8080"
IRIS = ids.Iris(BASE)
ID = "01jd3k8q2mabcdefghjk"
SETTINGS = {"deadline": None, "derandomize": True, "database": None}

# What we publish, byte for byte: every kind of IRI of ours once.
MINTED: list[tuple[ids.LocalRef, str]] = [
    (ids.MemberRef("alice"), f"{BASE}/u/alice"),
    (ids.MemberInboxRef("alice"), f"{BASE}/u/alice/inbox"),
    (ids.MemberOutboxRef("alice"), f"{BASE}/u/alice/outbox"),
    (ids.MemberFollowersRef("alice"), f"{BASE}/u/alice/followers"),
    (ids.GroupRef("long_covid"), f"{BASE}/g/long_covid"),
    (ids.GroupInboxRef("long_covid"), f"{BASE}/g/long_covid/inbox"),
    (ids.GroupOutboxRef("long_covid"), f"{BASE}/g/long_covid/outbox"),
    (ids.GroupOutboxPageRef("long_covid", 2), f"{BASE}/g/long_covid/outbox?page=2"),
    (ids.GroupFollowersRef("long_covid"), f"{BASE}/g/long_covid/followers"),
    (ids.GroupModeratorsRef("long_covid"), f"{BASE}/g/long_covid/moderators"),
    (ids.GroupFeaturedRef("long_covid"), f"{BASE}/g/long_covid/featured"),
    (ids.InstanceActorRef(), f"{BASE}/actor"),
    (ids.InstanceInboxRef(), f"{BASE}/actor/inbox"),
    (ids.InstanceOutboxRef(), f"{BASE}/actor/outbox"),
    (ids.InstanceFollowersRef(), f"{BASE}/actor/followers"),
    (ids.SharedInboxRef(), f"{BASE}/inbox"),
    (ids.ThreadRef(ID), f"{BASE}/t/{ID}"),
    (ids.PostRef(ID), f"{BASE}/p/{ID}"),
    (ids.ActivityRef(ID), f"{BASE}/activities/{ID}"),
    (ids.KeyRef(ids.MemberRef("alice")), f"{BASE}/u/alice#main-key"),
    (ids.KeyRef(ids.GroupRef("long_covid")), f"{BASE}/g/long_covid#main-key"),
    (ids.KeyRef(ids.InstanceActorRef()), f"{BASE}/actor#main-key"),
    (ids.StandInActivityRef(ids.MemberRef("alice"), "like"), f"{BASE}/u/alice#like"),
    (ids.StandInActivityRef(ids.MemberRef("alice"), "follow"), f"{BASE}/u/alice#follow"),
    (ids.JoinLinkRef("hush", "Xy-_9"), f"{BASE}/g/hush/ask/Xy-_9"),
]


@pytest.mark.parametrize(("ref", "iri"), MINTED, ids=lambda value: repr(value)[:60])
def test_mint_and_parse(ref: ids.LocalRef, iri: str) -> None:
    assert IRIS.iri(ref) == iri
    assert IRIS.parse_local(iri) == ref
    assert IRIS.is_local(iri)


def test_every_kind_of_reference_is_pinned() -> None:
    assert {type(ref) for ref, _ in MINTED} == set(ids.LocalRef.__args__)


def test_named_minters() -> None:
    assert IRIS.member("alice") == f"{BASE}/u/alice"
    assert IRIS.group("heart") == f"{BASE}/g/heart"
    assert IRIS.group_outbox("heart") == f"{BASE}/g/heart/outbox"
    assert IRIS.group_outbox_page("heart", 3) == f"{BASE}/g/heart/outbox?page=3"
    assert IRIS.group_followers("heart") == f"{BASE}/g/heart/followers"
    assert IRIS.group_moderators("heart") == f"{BASE}/g/heart/moderators"
    assert IRIS.group_featured("heart") == f"{BASE}/g/heart/featured"
    assert IRIS.member_outbox("alice") == f"{BASE}/u/alice/outbox"
    assert IRIS.member_followers("alice") == f"{BASE}/u/alice/followers"
    assert IRIS.thread(ID) == f"{BASE}/t/{ID}"
    assert IRIS.post(ID) == f"{BASE}/p/{ID}"
    assert IRIS.activity(ID) == f"{BASE}/activities/{ID}"
    assert IRIS.instance_actor() == f"{BASE}/actor"
    assert IRIS.instance_outbox() == f"{BASE}/actor/outbox"
    assert IRIS.instance_followers() == f"{BASE}/actor/followers"
    assert IRIS.shared_inbox() == f"{BASE}/inbox"
    assert IRIS.key_id(ids.GroupRef("heart")) == f"{BASE}/g/heart#main-key"
    assert ids.key_id(f"{BASE}/u/alice") == f"{BASE}/u/alice#main-key"
    assert IRIS.stand_in_activity("alice", "follow") == f"{BASE}/u/alice#follow"
    assert IRIS.join_link("hush", "code") == f"{BASE}/g/hush/ask/code"
    assert IRIS.webfinger_template() == f"{BASE}/.well-known/webfinger?resource={{uri}}"
    assert IRIS.nodeinfo() == f"{BASE}/nodeinfo/2.1"
    assert IRIS.authorize_interaction_template() == f"{BASE}/authorize_interaction?uri={{uri}}"
    assert ids.member_path("alice") == "/u/alice"
    assert ids.group_path("heart") == "/g/heart"
    assert ids.group_path("heart", "remote.example") == "/g/heart@remote.example"
    assert ids.group_moderation_path("heart") == "/g/heart/moderation"
    assert ids.thread_path(ID) == f"/t/{ID}"
    assert ids.post_path(ID) == f"/p/{ID}"


def test_minted_as_configured() -> None:
    """The configured spelling of the domain is what we publish (and what we compare
    case-insensitively when reading)."""
    iris = ids.Iris("https://Forum.Example/")
    assert iris.member("alice") == "https://Forum.Example/u/alice"
    assert iris.parse_local("https://forum.example/u/alice") == ids.MemberRef("alice")
    assert ids.Iris(DEV).member("bob") == "http://localhost:8080/u/bob"


def test_new_object_ids_parse() -> None:
    object_id = ids.new_object_id()
    assert IRIS.parse_local(IRIS.thread(object_id)) == ids.ThreadRef(object_id)
    assert IRIS.parse_local(IRIS.post(object_id)) == ids.PostRef(object_id)
    assert IRIS.parse_local(IRIS.activity(object_id)) == ids.ActivityRef(object_id)


def test_equivalent_spellings() -> None:
    """Scheme and host are case-insensitive, and so are names on this node (as in WebFinger):
    these name the same thing, in the form it is minted in."""
    assert IRIS.parse_local("https://HOSPITAL.example/u/alice") == ids.MemberRef("alice")
    assert IRIS.parse_local("HTTPS://hospital.example/g/heart") == ids.GroupRef("heart")
    assert IRIS.parse_local(f"{BASE}/u/Alice") == ids.MemberRef("alice")
    assert IRIS.parse_local(f"{BASE}/g/HEART/inbox") == ids.GroupInboxRef("heart")
    assert IRIS.parse_local(f"{BASE}/G/heart") is None  # a path's literal parts are exact
    dev = ids.Iris(DEV)
    assert dev.parse_local("http://LOCALHOST:8080/u/bob") == ids.MemberRef("bob")


HOSTILE = [
    # Other servers, and our names on them.
    "https://remote.example/u/alice",
    "https://hospital.example.evil/u/alice",
    "https://evil.hospital.example/u/alice",
    "https://hospital.example@evil.example/u/alice",
    "https://user@hospital.example/u/alice",
    "https://hospital.example:443/u/alice",
    "https://hospital.example:8443/u/alice",
    "https://hospital.example./u/alice",
    "http://hospital.example/u/alice",
    "//hospital.example/u/alice",
    "/u/alice",
    "hospital.example/u/alice",
    "",
    # Not exactly an IRI we mint.
    f"{BASE}",
    f"{BASE}/",
    f"{BASE}/u",
    f"{BASE}/u/",
    f"{BASE}/u/alice/",
    f"{BASE}/u//alice",
    f"{BASE}//u/alice",
    f"{BASE}/u/alice/extra",
    f"{BASE}/u/alice/inbox/",
    f"{BASE}/u/alice/inbox/extra",
    f"{BASE}/g/heart/members",
    f"{BASE}/g/heart/moderation",
    f"{BASE}/g/heart/join",
    f"{BASE}/g/heart@remote.example",
    f"{BASE}/g/heart/ask/",
    f"{BASE}/g/heart/ask/a/b",
    f"{BASE}/t/{ID}/reply",
    f"{BASE}/p/{ID}/edit",
    f"{BASE}/actor/",
    f"{BASE}/actor/keys",
    f"{BASE}/inbox/",
    f"{BASE}/activities/",
    # Dots and encodings.
    f"{BASE}/u/..",
    f"{BASE}/u/../g/heart",
    f"{BASE}/g/heart/../inbox",
    f"{BASE}/./u/alice",
    f"{BASE}/u/al.ice",
    f"{BASE}/u/%61lice",
    f"{BASE}/u/alice%2Finbox",
    f"{BASE}/%75/alice",
    f"{BASE}/g/heart%23main-key",
    # Queries and fragments where the pattern has none, or the wrong one.
    f"{BASE}/u/alice?",
    f"{BASE}/u/alice?x=1",
    f"{BASE}/u/alice#",
    f"{BASE}/u/alice#other-key",
    f"{BASE}/u/alice#main-key#main-key",
    f"{BASE}/u/alice/inbox#main-key",
    f"{BASE}/t/{ID}#main-key",
    f"{BASE}/g/heart#like",
    f"{BASE}/actor#follow",
    f"{BASE}/g/heart/outbox?",
    f"{BASE}/g/heart/outbox?page=",
    f"{BASE}/g/heart/outbox?page=0",
    f"{BASE}/g/heart/outbox?page=01",
    f"{BASE}/g/heart/outbox?page=-1",
    f"{BASE}/g/heart/outbox?page=100000",
    f"{BASE}/g/heart/outbox?page=1&page=2",
    f"{BASE}/g/heart/outbox?page=1#x",
    f"{BASE}/g/heart/outbox?Page=1",
    f"{BASE}/g/heart/followers?page=1",
    f"{BASE}/g/heart?page=1",
    # Names and ids that cannot be ours.
    f"{BASE}/u/{'a' * 31}",
    f"{BASE}/u/al-ice",
    f"{BASE}/u/al ice",
    f"{BASE}/u/alice\n",
    f"{BASE}/u/al\tice",
    f"{BASE}/u/alice\x00",
    f"{BASE}/u/\u212aelvin",  # KELVIN SIGN, which lowercases to an ASCII k
    f"{BASE}/u/\uff41lice",  # a fullwidth a
    f"{BASE}/t/{ID.upper()}",
    f"{BASE}/t/{ID}0",
    f"{BASE}/p/a.b",
    f"{BASE}/activities/x y",
    f"{BASE}/g/heart/ask/{'x' * 33}",
    f"{BASE}/g/heart/ask/a=b",
    " " + f"{BASE}/u/alice",
    f"{BASE}/u/alice ",
    "https://hospital.exampl\u212a/u/alice",
    f"{BASE}/u/" + "a" * 5000,
]


@pytest.mark.parametrize("iri", HOSTILE, ids=lambda value: repr(value)[:60])
def test_hostile_inputs_name_nothing(iri: str) -> None:
    assert IRIS.parse_local(iri) is None


def test_is_local_is_about_the_origin_only() -> None:
    assert IRIS.is_local(BASE)
    assert IRIS.is_local(f"{BASE}/")
    assert IRIS.is_local(f"{BASE}/u/alice/extra")
    assert IRIS.is_local(f"{BASE}?x")
    assert IRIS.is_local(f"{BASE}#x")
    assert IRIS.is_local("https://HOSPITAL.EXAMPLE/anything")
    for other in (
        "https://hospital.example.evil/u/alice",
        "https://hospital.example:443/u/alice",
        "https://hospital.example@evil.example/",
        "http://hospital.example/u/alice",
        "https://remote.example/u/alice",
        "https://hospital.exampl\u212a/u/alice",
        "",
    ):
        assert not IRIS.is_local(other), other


def test_a_development_node_is_its_port() -> None:
    dev = ids.Iris(DEV)
    assert dev.parse_local("http://localhost:8080/u/bob") == ids.MemberRef("bob")
    for other in (
        "http://localhost/u/bob",
        "http://localhost:80800/u/bob",
        "http://localhost:808/u/bob",
        "https://localhost:8080/u/bob",
        "http://127.0.0.1:8080/u/bob",
    ):
        assert dev.parse_local(other) is None, other
        assert not dev.is_local(other), other


# ---------------------------------------------------------------- properties

names = st.from_regex(r"[a-z0-9_]{1,30}", fullmatch=True)
object_ids = st.from_regex(r"[0-9a-z]{1,20}", fullmatch=True)
codes = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)
actors = st.one_of(
    st.builds(ids.MemberRef, names), st.builds(ids.GroupRef, names), st.just(ids.InstanceActorRef())
)
refs: st.SearchStrategy[ids.LocalRef] = st.one_of(
    actors,
    *(
        st.builds(kind, names)
        for kind in (
            ids.MemberInboxRef,
            ids.MemberOutboxRef,
            ids.MemberFollowersRef,
            ids.GroupInboxRef,
            ids.GroupOutboxRef,
            ids.GroupFollowersRef,
            ids.GroupModeratorsRef,
            ids.GroupFeaturedRef,
        )
    ),
    st.builds(ids.GroupOutboxPageRef, names, st.integers(1, 99_999)),
    st.sampled_from([ids.InstanceInboxRef(), ids.InstanceOutboxRef(), ids.InstanceFollowersRef()]),
    st.just(ids.SharedInboxRef()),
    st.builds(ids.ThreadRef, object_ids),
    st.builds(ids.PostRef, object_ids),
    st.builds(ids.ActivityRef, object_ids),
    st.builds(ids.KeyRef, actors),
    st.builds(
        ids.StandInActivityRef, st.builds(ids.MemberRef, names), st.sampled_from(ids.STAND_IN_KINDS)
    ),
    st.builds(ids.JoinLinkRef, names, codes),
)
bases = st.sampled_from([BASE, DEV, "https://Forum.Example", "https://a.example:8443"])


@settings(max_examples=500, **SETTINGS)
@given(base=bases, ref=refs)
def test_round_trip(base: str, ref: ids.LocalRef) -> None:
    iris = ids.Iris(base)
    assert iris.parse_local(iris.iri(ref)) == ref
    assert ids.parse_path(ids.path_of(ref)) == ref


@settings(max_examples=1000, **SETTINGS)
@given(
    ref=refs,
    position=st.integers(0, 200),
    change=st.sampled_from(["insert", "delete", "replace"]),
    character=st.sampled_from([*"/.?#%&=@:;-_aZ0 \t\n\x00", "\u212a", "\u0130", "é"]),
)
def test_nothing_but_what_we_mint(
    ref: ids.LocalRef, position: int, change: str, character: str
) -> None:
    """A minted IRI with one character inserted, deleted or replaced anywhere names either
    nothing or exactly the thing it now spells (up to case), never something else."""
    iri = IRIS.iri(ref)
    at = position % (len(iri) + 1)
    if change == "insert":
        mutated = iri[:at] + character + iri[at:]
    elif change == "delete":
        mutated = iri[:at] + iri[at + 1 :]
    else:
        mutated = iri[:at] + character + iri[at + 1 :]
    found = IRIS.parse_local(mutated)
    if found is not None:
        assert IRIS.iri(found).lower() == mutated.lower()
        assert IRIS.parse_local(IRIS.iri(found)) == found


@settings(max_examples=500, **SETTINGS)
@given(text=st.text(max_size=80))
def test_any_text(text: str) -> None:
    for candidate in (text, BASE + text, BASE + "/" + text, f"{BASE}/u/{text}"):
        found = IRIS.parse_local(candidate)
        if found is not None:
            assert IRIS.iri(found).lower() == candidate.lower()
        assert IRIS.is_local(candidate) or found is None


@settings(max_examples=300, **SETTINGS)
@given(text=st.text(max_size=40))
def test_names_are_handles(text: str) -> None:
    """A name in an IRI of ours is a handle node.validation accepts, in any case."""
    found = IRIS.parse_local(f"{BASE}/u/{text}")
    handle = text.isascii() and HANDLE_PATTERN.fullmatch(text.lower()) is not None
    assert (found is not None) == handle
    if found is not None:
        assert found == ids.MemberRef(text.lower())


# ---------------------------------------------------------------- routes


def _app() -> web.Application:
    app = web.Application()
    for module in (
        routes_discovery,
        routes_activitypub,
        routes_account,
        routes_groups,
        routes_group_settings,
        routes_moderation,
        routes_crisis,
        routes_threads,
        routes_qa,
        routes_dashboard,
        routes_feed,
    ):
        module.register(app.router)
    return app


def test_pattern_parameters_are_the_fields() -> None:
    for kind, pattern in ids.PATTERNS.items():
        assert set(re.findall(r"\{(\w+)\}", pattern)) == {field.name for field in fields(kind)}


DECLARED = {
    value for name, value in vars(ids).items() if name.endswith("_PATH") and isinstance(value, str)
}


def test_routes_are_registered_from_the_patterns() -> None:
    """Every route under the paths ids.py declares is one of its patterns, spelt the same,
    and every pattern it declares is served."""
    ours = re.compile(r"/(u|g|t|p|actor|activities|inbox|\.well-known|nodeinfo|authorize_\w+)(/|$)")
    registered = {
        resource.canonical
        for resource in _app().router.resources()
        if ours.match(resource.canonical)
    }
    assert registered == DECLARED, registered ^ DECLARED


def _inbox(ref: ids.LocalRef) -> bool:
    return isinstance(
        ref, ids.MemberInboxRef | ids.GroupInboxRef | ids.InstanceInboxRef | ids.SharedInboxRef
    )


@pytest.mark.parametrize(
    ("ref", "iri"),
    [(ref, iri) for ref, iri in MINTED if type(ref) in ids.PATTERNS],
    ids=lambda value: repr(value)[:60],
)
async def test_minted_iris_reach_their_routes(ref: ids.LocalRef, iri: str) -> None:
    """Each IRI we mint is served by the route of its pattern, whose parameters are the
    reference's fields (the join link is a page: asked for with GET, answered with POST)."""
    app = _app()
    request = make_mocked_request("POST" if _inbox(ref) else "GET", ids.path_of(ref), app=app)
    match = await app.router.resolve(request)
    assert match.http_exception is None, iri
    assert match.route.resource is not None
    assert match.route.resource.canonical == ids.PATTERNS[type(ref)]
    assert dict(match) == {field.name: getattr(ref, field.name) for field in fields(ref)}


# ---------------------------------------------------------------- no IRI of ours built by hand

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("node", "federation", "web", "keys")
# How one of our IRIs is built by hand: a suffix appended to an actor's or object's IRI, or
# one of our paths written out. Only node/ids.py may hold string literals that start so.
HAND_BUILT = (
    "/inbox",
    "/outbox",
    "/followers",
    "/moderators",
    "/featured",
    "/ask/",
    "#main-key",
    "#like",
    "#follow",
    "?page=",
    "/u/",
    "/g/",
    "/t/",
    "/p/",
    "/actor",
    "/activities/",
    "/.well-known/",
    "/nodeinfo",
    "/authorize_interaction",
)
# The same suffixes after a str.format or %-format placeholder.
FORMATTED = re.compile(r"(\{\w*\}|%s)(/inbox|/outbox|/followers|#main-key|\?page=)")
# A template appending a published suffix to something it was given.
TEMPLATE_HAND_BUILT = re.compile(r"\}\}\s*(/inbox|/outbox|/followers|#main-key|\?page=)")


def hand_built(source: str) -> list[tuple[int, str]]:
    """String literals (and the literal parts of f-strings) that start like one of our IRIs'
    suffixes or paths; docstrings aside."""
    tree = ast.parse(source)
    documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, documented)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and (node.value.startswith(HAND_BUILT) or FORMATTED.search(node.value))
    )


def test_the_guard_sees_hand_built_iris() -> None:
    source = '''
"""A module that mentions /u/{username} in its docstring, which is fine."""
inbox = actor + "/inbox"
key = f"{actor}#main-key"
page = f"{outbox}?page={number}"
member = f"{base}/u/{name}"
route = "/g/{slug}/outbox"
fine = "/admin/federation/inbox/1/retry"
formatted = "{}/followers".format(actor)
percent = "%s#main-key" % actor
'''
    assert [line for line, _ in hand_built(source)] == [3, 4, 5, 6, 7, 9, 10]


def test_no_iri_of_ours_is_built_by_hand() -> None:
    offenders = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "node" / "ids.py":
                continue
            for line, text in hand_built(path.read_text(encoding="utf-8")):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {text!r}")
    for path in sorted((ROOT / "web" / "templates").rglob("*.html")):
        for found in TEMPLATE_HAND_BUILT.finditer(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.relative_to(ROOT)}: {found.group()!r}")
    assert not offenders, "mint these with node.ids instead:\n" + "\n".join(offenders)
