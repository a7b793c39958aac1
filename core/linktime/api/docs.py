"""The API docs pages under /schema (ReDoc at /schema and /schema/redoc, Swagger UI at
/schema/swagger) load their scripts, styles and icon from this package (static/openapi, see its
VERSIONS), not from a CDN, so they work on a machine without internet access."""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.datastructures import ResponseHeader
from litestar.openapi.plugins import (
    OpenAPIRenderPlugin,
    RedocRenderPlugin,
    SwaggerRenderPlugin,
    YamlRenderPlugin,
)
from litestar.static_files import create_static_files_router

ASSETS = Path(__file__).parent / "static" / "openapi"
ASSETS_PATH = "/static/openapi"
_FAVICON = f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>"


# Nothing from elsewhere, whatever a bundle asks for (ReDoc shows a logo from cdn.redoc.ly: the
# browser refuses it, ReDoc hides it). The pages' own init scripts are inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def router() -> Router:
    """Where Litestar mounts the docs pages (OpenAPIConfig.openapi_router)."""
    csp = ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY)
    return Router(path="/schema", route_handlers=[], response_headers=[csp])


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """The docs pages (the JSON schema, /schema/openapi.json, Litestar always serves)."""
    return [
        RedocRenderPlugin(
            path=["/", "/redoc"],
            js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            google_fonts=False,
            favicon=_FAVICON,
        ),
        SwaggerRenderPlugin(
            path="/swagger",
            js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            css_url=f"{ASSETS_PATH}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
            favicon=_FAVICON,
        ),
        YamlRenderPlugin(),
    ]


def assets() -> Router:
    return create_static_files_router(
        path=ASSETS_PATH, directories=[ASSETS], name="openapi-static", include_in_schema=False
    )
