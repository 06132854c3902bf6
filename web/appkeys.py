"""Every typed key the application and its requests carry."""

from __future__ import annotations

import jinja2
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from federation.service import Federation
from node.identity import IdentityCache
from node.policy import Viewer
from node.runtime import NodeContext
from node.storage.models import Member
from web.metrics import Metrics
from web.signed_in import SignedIn

NODE = web.AppKey("node", NodeContext)
FEDERATION = web.AppKey("federation", Federation)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
METRICS = web.AppKey("metrics", Metrics)
# The node's name, logo and registration mode, as this process last read them.
IDENTITY = web.AppKey("identity", IdentityCache)

# Request-scoped values.
DB = web.RequestKey("db", AsyncSession)
MEMBER = web.RequestKey("member", Member)
ME = web.RequestKey("me", SignedIn)
VIEWER = web.RequestKey("viewer", Viewer)
SESSION_TOKEN = web.RequestKey("session_token", str)
CSRF_BASIS = web.RequestKey("csrf_basis", str)
NEW_CSRF_SEED = web.RequestKey("new_csrf_seed", str)
CSRF_FAILED = web.RequestKey("csrf_failed", bool)
REQUEST_ID = web.RequestKey("request_id", str)
