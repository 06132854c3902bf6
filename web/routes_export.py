"""A member's download of all their data (node/export.py builds the archive)."""

from __future__ import annotations

import logging

from aiohttp import web

from federation.convert import Documents
from node.export import archive_name, write_archive
from web.pages import db, node_of, now, render, require_member
from web.security_headers import SECURITY_HEADERS

log = logging.getLogger(__name__)

EXPORT_PATH = "/account/export"


def register(router: web.UrlDispatcher) -> None:
    router.add_get(EXPORT_PATH, export_page)
    # A POST: a form with the CSRF token starts it, and no link prefetcher ever does.
    router.add_post(EXPORT_PATH, export_download)


async def export_page(request: web.Request) -> web.Response:
    require_member(request)
    return render(request, "account_export.html")


async def export_download(request: web.Request) -> web.StreamResponse:
    me = require_member(request)
    node = node_of(request)
    exported_at = now(request)
    # The request's transaction may hold SQLite's write lock: it ends here, and the archive
    # is read in a transaction that holds none, however slowly the download is taken.
    await node.commit(db(request))
    response = web.StreamResponse(
        headers={
            **SECURITY_HEADERS,
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="{archive_name(me, exported_at)}"',
            "Cache-Control": "no-store",
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        async with node.transaction(reading=True) as session:
            await write_archive(
                session,
                me,
                shapes=Documents(node.settings),
                exported_at=exported_at,
                send=response.write,
            )
    except ConnectionResetError:
        log.info("a data export ended early: the browser went away")
        return response
    except Exception:
        # Once the download has begun no error page can be sent: the connection is closed
        # without the zip's end, so what arrived reads as broken, never as a whole archive.
        log.exception("a data export stopped before it was complete")
        request.protocol.force_close()
        return response
    await response.write_eof()
    return response
