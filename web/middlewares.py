"""Security headers, error pages, one database session per request, sign-in and CSRF."""

from __future__ import annotations

import asyncio
import logging
import time
from http import HTTPStatus

from aiohttp import web

from node.auth import member_for_session
from node.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from node.notifications import unread_count
from node.policy import viewer_for
from node.storage.engine import begin_for_reading
from node.throttles import Throttled
from web.appkeys import (
    CSRF_BASIS,
    CSRF_FAILED,
    DB,
    IDENTITY,
    ME,
    MEMBER,
    METRICS,
    NEW_CSRF_SEED,
    NODE,
    REQUEST_ID,
    SESSION_TOKEN,
    VIEWER,
)
from web.assets import STATIC_PREFIX
from web.cookies import SEED_COOKIE, SESSION_COOKIE, duplicated_cookie, read_cookie, set_cookie
from web.csrf import CSRF_FIELD, new_seed, token_matches
from web.logs import REQUEST_ID_HEADER, request_id, request_id_for
from web.metrics import route_pattern
from web.pages import Handler, answer_and_hang_up, is_signed_not_cookied, render, retry_after
from web.routes_health import PATHS as health_paths
from web.security_headers import SECURITY_HEADERS
from web.signed_in import SignedIn

log = logging.getLogger(__name__)

# A request body must arrive within this: a sender trickling bytes holds nothing for longer.
BODY_READ_SECONDS = 10.0


HTTP_STATUSES = {status.value for status in HTTPStatus}
STATUS_OF = {NotFound: 404, Forbidden: 403, Conflict: 409, Invalid: 400}
TITLE_OF = {
    400: "That did not work",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "That did not work",
    408: "Too slow",
    413: "Too large",
    429: "Please wait",
    500: "Something went wrong",
}


# What an error page says when the code raising it gave no reason of its own: plain words,
# never the HTTP reason phrase ("Method Not Allowed").
MESSAGE_OF = {
    403: "You do not have permission to open this page. If you think you should, check that "
    "you are signed in with the right account, or ask the group's moderators.",
    404: "There is nothing at this address.",
    405: "This address cannot be used like that. If you pressed a button or followed a link, "
    "go back, reload the page and try again.",
}


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    try:
        return render(
            request,
            "error.html",
            {
                "title": TITLE_OF.get(status, "That did not work"),
                "message": message,
                "status": status,
            },
            status=status,
        )
    except Exception:  # the page itself failed: still answer, plainly
        log.exception("cannot render the error page")
        return web.Response(text=message, status=status, content_type="text/plain")


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost middleware: gives the request its id (for every log line written while
    it is handled, and the X-Request-Id header) and counts it, by route pattern and status."""
    rid = request_id_for(request)
    request[REQUEST_ID] = rid
    token = request_id.set(rid)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away first (nginx's code for it)
        raise
    finally:
        request_id.reset(token)
        seconds = time.perf_counter() - started
        request.app[METRICS].observe(request.method, route_pattern(request), status, seconds)


async def request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer, error pages and redirects included, names its id."""
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response


@web.middleware
async def no_store_for_sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`Cache-Control: no-store` on every answer to a signed-in member, or that sets or drops a
    cookie: the back button of a shared computer must not show a private thread after sign-out.
    Anonymous public pages keep their caching; private pages are only ever served signed in,
    or marked by their handler (join links). Static files are the same for everyone and keep
    their own caching: a stylesheet fetched with a session cookie is still the public one."""
    if request.path.startswith(STATIC_PREFIX):
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if _session_bound(request, exc):
            exc.headers["Cache-Control"] = "no-store"
        raise
    if _session_bound(request, response):
        response.headers["Cache-Control"] = "no-store"
    return response


def _session_bound(request: web.Request, response: web.StreamResponse) -> bool:
    if "immutable" in response.headers.get("Cache-Control", ""):
        return False  # a public file named by its content (the node's logo): the same for all
    return (
        request.get(MEMBER) is not None
        or SESSION_COOKIE in request.cookies
        or bool(response.cookies)
        or "Set-Cookie" in response.headers
    )


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPRedirection:
        raise
    except web.HTTPRequestEntityTooLarge:
        return error_page(request, 413, "What you sent is larger than this node accepts.")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        default = HTTPStatus(exc.status).phrase if exc.status in HTTP_STATUSES else None
        message = exc.reason
        if exc.status in MESSAGE_OF and exc.reason in (default, ""):
            message = MESSAGE_OF[exc.status]
        page = error_page(request, exc.status, message)
        if "Allow" in exc.headers:  # a 405 still says which methods the address takes
            page.headers["Allow"] = exc.headers["Allow"]
        return page
    except Throttled as error:  # a page that does not keep the form's text says the wait
        return retry_after(error_page(request, 429, str(error)), error.wait)
    except DomainError as error:
        return error_page(request, STATUS_OF.get(type(error), 400), str(error))
    except Exception:
        # The route's pattern, never the path: a path may hold a reset token or a join code.
        log.exception("unhandled error on %s %s", request.method, route_pattern(request))
        return error_page(request, 500, "Nothing was saved. Please try again in a moment.")


@web.middleware
async def address_hygiene(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse NUL in addresses before anything looks them up: no name or id contains it, and
    PostgreSQL refuses it in text outright."""
    if "\x00" in request.path or any("\x00" in value for value in request.query.values()):
        return error_page(request, 400, "The address contains a character that is not allowed.")
    return await handler(request)


@web.middleware
async def one_cookie_each(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a request that carries one of our cookies twice: a copy planted by another
    origin on this host must not be able to stand in for the real one."""
    name = duplicated_cookie(request)
    if name is not None:
        message = (
            f"Your browser sent two cookies named {name}, so this node cannot tell which is "
            "its own. Delete this site's cookies in your browser, then sign in again."
        )
        return error_page(request, 400, message)
    return await handler(request)


@web.middleware
async def body_first(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read a form's body, within a deadline, before any database work: a slow sender then
    never holds a transaction (on SQLite, the write lock) while its bytes trickle in.
    Inboxes read their own, larger bodies, under the same deadline."""
    if request.method == "POST" and not is_signed_not_cookied(request):
        try:
            async with asyncio.timeout(BODY_READ_SECONDS):
                if request.content_type == "multipart/form-data":
                    # Parsed as it arrives (a file upload): read() would leave post() nothing.
                    await request.post()
                else:
                    await request.read()  # kept by aiohttp for request.post()
        except TimeoutError:
            message = "What you sent took too long to arrive; nothing was saved."
            return await answer_and_hang_up(request, error_page(request, 408, message))
        except ValueError:  # a multipart body without its boundaries
            return error_page(request, 400, "The form could not be read; nothing was saved.")
    return await handler(request)


@web.middleware
async def database_session(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One session and transaction per request: committed when the answer is not an error.

    Inboxes get none: they read in a short transaction of their own and keep what they accept
    through the inbox writer, so a burst of them holds no pooled connection while it waits."""
    if (
        request.path.startswith(STATIC_PREFIX)
        or request.path in health_paths
        or is_signed_not_cookied(request)
    ):
        return await handler(request)
    node = request.app[NODE]
    async with node.sessions() as session:
        await session.begin()
        if request.method in ("GET", "HEAD"):
            await begin_for_reading(session)
        request[DB] = session
        await _sign_in_from_cookie(request)
        await request.app[IDENTITY].get(session, node.clock.now())
        try:
            if _refused_while_awaiting_approval(request):
                response = error_page(request, 403, AWAITING_APPROVAL)
            else:
                response = await handler(request)
        except web.HTTPRedirection:
            await node.commit(session)
            raise
        except BaseException:
            await session.rollback()
            raise
        if response.status < 400:
            await node.commit(session)
        else:
            await session.rollback()
        _set_csrf_seed_cookie(request, response)
        return response


AWAITING_APPROVAL = (
    "Your account is waiting for an admin's approval. Until then you can read, but not "
    "post, reply, join groups or report. You will be able to once an admin approves it."
)
# What an account waiting for approval may still send: signing out, and its own account's
# pages (its password, its sessions, deleting it).
_ALLOWED_WHILE_AWAITING = ("/logout", "/account/")


def _refused_while_awaiting_approval(request: web.Request) -> bool:
    me = request.get(ME)
    if me is None or not me.awaiting_approval or request.method in ("GET", "HEAD"):
        return False
    return not request.path.startswith(_ALLOWED_WHILE_AWAITING)


async def _sign_in_from_cookie(request: web.Request) -> None:
    node = request.app[NODE]
    token = read_cookie(request, SESSION_COOKIE)
    writes = request.method not in ("GET", "HEAD")
    signed_in = (
        await member_for_session(request[DB], token, node.clock.now(), note_activity=writes)
        if token
        else None
    )
    if signed_in is not None and token:
        request[MEMBER] = signed_in
        # One indexed count for the header of a page; none for a form's POST, which answers
        # with a redirect to a page that counts, nor for a visitor who is not signed in.
        unread = 0 if writes else await unread_count(request[DB], signed_in.id)
        request[ME] = SignedIn.of(signed_in, unread)
        request[VIEWER] = viewer_for(signed_in.id, signed_in.role)
        request[SESSION_TOKEN] = token
        request[CSRF_BASIS] = "session:" + token
        return
    seed = read_cookie(request, SEED_COOKIE)
    if not seed or len(seed) > 64:
        seed = new_seed()
        request[NEW_CSRF_SEED] = seed
    request[CSRF_BASIS] = "seed:" + seed


def _set_csrf_seed_cookie(request: web.Request, response: web.StreamResponse) -> None:
    seed = request.get(NEW_CSRF_SEED)
    # Only pages carry forms; JSON and other cacheable answers must not set cookies.
    if seed and response.content_type == "text/html":
        set_cookie(request, response, SEED_COOKIE, seed)


def _from_another_origin(request: web.Request) -> bool:
    """Whether the browser says the form was sent from another origin. Cookies do not tell
    ports apart, so a sibling origin on this host can hold a valid seed and token of its own;
    its forms still say where they come from: Sec-Fetch-Site where the browser sends it, else
    Origin (which is "null", telling nothing, under our no-referrer policy)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return False
    own = (request.app[NODE].settings.base_url, f"{request.scheme}://{request.host}")
    return origin not in own


@web.middleware
async def csrf(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every POST form must carry the token; handlers that keep typed text re-render instead."""
    if request.method != "POST" or is_signed_not_cookied(request):
        return await handler(request)
    data = await request.post()
    offered = data.get(CSRF_FIELD)
    if not _from_another_origin(request) and token_matches(
        request.app[NODE].secret,
        request.get(CSRF_BASIS),
        offered if isinstance(offered, str) else "",
    ):
        return await handler(request)
    request[CSRF_FAILED] = True
    if getattr(handler, "rerenders_stale_forms", False):
        return await handler(request)
    return error_page(
        request,
        403,
        "This form had expired or came from another page, so nothing was done. "
        "Go back, reload the page and try again.",
    )
