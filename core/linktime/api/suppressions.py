"""The account's suppression list: /v1/suppressions."""

from __future__ import annotations

from litestar.handlers import HTTPRouteHandler

from ..engine import Hub


def handlers(hub: Hub) -> list[HTTPRouteHandler]:
    return []
