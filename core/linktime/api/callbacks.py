"""Routes providers call: delivery callbacks under /v1/callbacks and the one-click unsubscribe."""

from __future__ import annotations

from litestar.handlers import HTTPRouteHandler

from ..engine import Hub


def handlers(hub: Hub) -> list[HTTPRouteHandler]:
    return []
