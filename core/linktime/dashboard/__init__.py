"""The web dashboard: server-rendered pages (Litestar + Jinja2, plain HTML forms, a little
vanilla JS) over the same service functions as the JSON API.

Mounted by :func:`linktime.api.create_app` through :class:`DashboardPlugin`: the pages live under
``/`` in one router with its own session middleware, CSRF guard and HTML error pages, so the
bearer-key API under ``/v1`` is untouched by either. Each page area is a module of this package
(``account``, ``workflows``, ``editor``, ``preview``, ``runs``, ``events``, ``bookings``,
``integrations``, ``sources``, ``webhooks``, ``suppressions``) that lists its route handlers in
``HANDLERS``; ``app`` holds what they share.
"""

from __future__ import annotations

from litestar import Router
from litestar.config.app import AppConfig
from litestar.datastructures import ResponseHeader
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.plugins import InitPlugin
from litestar.static_files import create_static_files_router

from ..engine import Hub
from ..errors import InputError, NotFound
from . import (
    account,
    bookings,
    editor,
    events,
    integrations,
    preview,
    runs,
    sources,
    suppressions,
    webhooks,
    workflows,
)
from .app import (
    HERE,
    on_http,
    on_input,
    on_not_found,
    on_sign_in_required,
    on_unexpected,
    provide_me,
    template_config,
)
from .session import SignInRequired, check_csrf, session_config

PAGES = (
    account,
    workflows,
    editor,
    preview,
    runs,
    events,
    bookings,
    integrations,
    sources,
    webhooks,
    suppressions,
)


class DashboardPlugin(InitPlugin):
    """Adds the dashboard's router and its template engine to a Litestar app."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.append(router(self.hub))
        app_config.template_config = template_config()
        return app_config


SECURITY_HEADERS = [
    # Pages may show a secret once: never cache them; never frame them (the toggles are forms).
    ResponseHeader(name="Cache-Control", value="no-store"),
    ResponseHeader(name="X-Frame-Options", value="DENY"),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
    ResponseHeader(
        name="Content-Security-Policy",
        value="default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
]


def router(hub: Hub) -> Router:
    async def provide_hub() -> Hub:
        return hub

    static = create_static_files_router(
        path="/static/dashboard",
        directories=[HERE / "static"],
        name="dashboard-static",
        include_in_schema=False,
    )
    return Router(
        path="/",
        route_handlers=[*(h for m in PAGES for h in m.HANDLERS), static],
        dependencies={"hub": Provide(provide_hub), "me": Provide(provide_me)},
        middleware=[session_config(hub).middleware],
        guards=[check_csrf],
        exception_handlers={
            SignInRequired: on_sign_in_required,
            NotFound: on_not_found,
            InputError: on_input,
            HTTPException: on_http,
            Exception: on_unexpected,
        },
        response_headers=SECURITY_HEADERS,
        include_in_schema=False,
    )
