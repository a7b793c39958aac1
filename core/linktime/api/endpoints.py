"""Webhook endpoints: their health, re-enabling, secret rotation and example deliveries."""

from __future__ import annotations

from litestar.handlers import HTTPRouteHandler

from ..engine import Hub


def handlers(hub: Hub) -> list[HTTPRouteHandler]:
    return []
