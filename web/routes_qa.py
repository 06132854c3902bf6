"""Expert Q&A: a moderator schedules one in a group (node/qa.py); its thread is a thread."""

from __future__ import annotations

from aiohttp import web

from node import groups, ids, qa
from node.errors import Forbidden, Invalid
from node.ids import thread_path
from node.policy import Action
from web.pages import (
    STALE_FORM,
    db,
    form,
    node_of,
    now,
    render,
    require_member,
    rerenders_stale_forms,
    see_other,
    stale_form,
    viewer,
)

FIELDS = ("topic", "intro", "experts", "starts", "ends", "zone")


def register(router: web.UrlDispatcher) -> None:
    router.add_get(ids.GROUP_NEW_QA_PATH, new_qa_form)
    router.add_post(ids.GROUP_NEW_QA_PATH, new_qa_submit)


async def _view(request: web.Request) -> groups.GroupView:
    require_member(request)
    view = await groups.view_group(
        db(request), request.match_info["slug"], viewer(request), need=Action.READ
    )
    if view.group.domain:
        raise Forbidden(qa.ONLY_LOCAL_GROUPS)
    if not view.may(Action.MODERATE):
        raise Forbidden(qa.NOT_A_MODERATOR)
    return view


async def new_qa_form(request: web.Request) -> web.Response:
    view = await _view(request)
    values = {"zone": "UTC"}
    return render(request, "qa_new.html", {"view": view, "values": values, "errors": {}})


@rerenders_stale_forms
async def new_qa_submit(request: web.Request) -> web.StreamResponse:
    view = await _view(request)
    data = await form(request)
    values = {key: data.get(key, "") for key in FIELDS}
    errors: dict[str, str] = {"form": STALE_FORM} if stale_form(request) else {}
    if not errors:
        try:
            zone = qa.zone_named(values["zone"])
            problems: dict[str, str] = {}
            moments = []
            for field, what in (("starts", "start"), ("ends", "end")):
                try:
                    moments.append(qa.form_time(values[field], zone, field, what))
                except Invalid as error:
                    problems |= error.problems
            if problems:
                raise Invalid(problems)
            thread = await qa.schedule(
                db(request),
                node_of(request).settings.limits,
                view,
                topic=values["topic"],
                intro=values["intro"],
                experts=values["experts"],
                starts_at=moments[0],
                ends_at=moments[1],
                zone=zone,
                now=now(request),
            )
        except Invalid as error:
            errors = error.problems
        else:
            raise see_other(thread_path(thread.id))
    context = {"view": view, "values": values, "errors": errors}
    return render(request, "qa_new.html", context, 400)
