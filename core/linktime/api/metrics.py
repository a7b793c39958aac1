"""``GET /metrics``: the Prometheus exposition (``linktime.metrics``), for the operator's
scraper, not for the public. No account key: open, unless ``LINKTIME_ADMIN_TOKEN`` is set,
then it takes that token as a bearer. Left out of /schema on purpose: it is not part of the
JSON API, its body is Prometheus text.

Also counts the events ``POST /v1/events`` refuses (``rejected``): those never reach the hub.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.config.app import AppConfig
from litestar.exceptions import HTTPException
from litestar.plugins import InitPlugin
from litestar.types import Scope
from litestar.utils.scope.state import ScopeState

from .. import metrics
from ..engine import Hub
from ..errors import InputError
from ..models import EVENT_TYPES
from ..offload import offload
from .admin import require_operator

EVENTS_PATH = "/v1/events"


class MetricsPlugin(InitPlugin):
    """Adds ``/metrics`` and the count of refused events to a Litestar app."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        hub = self.hub

        @get("/metrics", include_in_schema=False)
        async def scrape(request: Request[Any, Any, Any]) -> Response[bytes]:
            if hub.settings.admin_token is not None:
                require_operator(request, hub.settings.admin_token)
            # The scrape-time gauges query the database: off the event loop.
            accept = request.headers.get("accept", "")
            body, content_type = await offload(metrics.exposition, hub, accept)
            return Response(body, headers={"content-type": content_type})

        async def count_rejected(exc: Exception, scope: Scope) -> None:
            if scope.get("path") != EVENTS_PATH or scope.get("method") != "POST":
                return
            status = exc.status if isinstance(exc, InputError) else None
            if isinstance(exc, HTTPException):
                status = exc.status_code
            # A bad key is not an event received; a 500 is the server's fault, not the event's.
            if status is None or status == 401 or status >= 500:
                return
            metrics.event_received(_event_type(scope), "rejected")

        app_config.route_handlers.append(scrape)
        app_config.after_exception.append(count_rejected)
        return app_config


def _event_type(scope: Scope) -> str:
    """The refused body's ``type`` when it is one of the event types, else ``unknown``. Only
    Litestar's copy of a body already decoded (the API's ``_read_json`` does it before the
    route) is read: reading the request again could wait on the client."""
    body = ScopeState.from_scope(scope).json
    kind = body.get("type") if isinstance(body, dict) else None
    return kind if kind in EVENT_TYPES else metrics.UNKNOWN_TYPE
