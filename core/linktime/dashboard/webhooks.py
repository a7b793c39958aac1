"""Settings → Webhooks: every webhook endpoint of the account, its state and deliveries."""

from __future__ import annotations

from litestar.handlers import HTTPRouteHandler

HANDLERS: list[HTTPRouteHandler] = []
