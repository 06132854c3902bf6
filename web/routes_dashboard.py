"""The dashboards: how the node is doing, for its admins; how a group is doing, for its
moderators. The figures come from node.community_figures; this only draws them."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from federation import health
from node import community_figures, groups, ids
from node.policy import Action
from web.charts import bar_chart, count_text, series_rows, value_text
from web.pages import db, now, render, viewer


@dataclass(frozen=True)
class FederationSummary:
    """What /admin/federation shows per server, summed: words for the dashboard."""

    pending: str
    failed: str
    paused: str


def register(router: web.UrlDispatcher) -> None:
    router.add_get(ids.ADMIN_DASHBOARD_PAGE, node_dashboard)
    router.add_get(ids.GROUP_DASHBOARD_PATH, group_dashboard)


def _figures_context(figures: community_figures.Figures) -> dict[str, object]:
    return {
        "figures": figures,
        "chart": bar_chart,
        "rows": lambda series: series_rows(series, figures.weeks),
        "value_text": value_text,
    }


async def node_dashboard(request: web.Request) -> web.Response:
    if not viewer(request).is_admin:
        raise web.HTTPNotFound()  # the page's existence is nobody else's business
    session, moment = db(request), now(request)
    figures = await community_figures.node_figures(session, viewer(request), moment)
    hosts = await health.hosts_health(session)
    federation = FederationSummary(
        pending=count_text(sum(host.waiting for host in hosts)),
        failed=count_text(sum(host.counts["failed"] for host in hosts)),
        paused=count_text(sum(1 for host in hosts if host.circuit(moment) == "open")),
    )
    context = _figures_context(figures) | {"view": None, "federation": federation}
    return render(request, "dashboard.html", context)


async def group_dashboard(request: web.Request) -> web.Response:
    # Anyone who may not moderate the group gets what a missing group gets.
    view = await groups.view_group(
        db(request), request.match_info["slug"], viewer(request), Action.MODERATE
    )
    figures = await community_figures.group_figures(db(request), view, now(request))
    return render(request, "dashboard.html", _figures_context(figures) | {"view": view})
