"""Settings → Opt-outs: the suppression list, viewed and edited."""

from __future__ import annotations

from litestar.handlers import HTTPRouteHandler

HANDLERS: list[HTTPRouteHandler] = []
