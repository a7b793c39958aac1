"""Routes providers call: delivery callbacks under /v1/callbacks and the one-click unsubscribe.

None takes an API key: a callback's URL names its account with a MAC'd key and the plugin checks
the provider's signature; an unsubscribe link carries a MAC'd token. They are outside the
dashboard's router, so its session and CSRF check do not apply (a mail client's RFC 8058
one-click POST has neither)."""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import parse_qsl

from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from .. import delivery
from ..engine import Hub
from ..errors import FieldError, InputError, NotFound
from ..offload import offload

HTML = "text/html; charset=utf-8"
# The unsubscribe pages stand alone (no dashboard styles or scripts); the token in their URL
# is not passed on to anyone.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}
_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:4rem auto;padding:0 1rem;"
    "color:#1f2937}button{font:inherit;padding:.5rem 1rem;border-radius:6px;border:0;"
    "background:#1d4ed8;color:#fff;cursor:pointer}"
)


def _page(title: str, body: str, status: int = 200) -> Response[str]:
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )
    return Response(html, status_code=status, media_type=HTML, headers=_PAGE_HEADERS)


_INVALID = "<p>This unsubscribe link is not valid. It may have been copied incompletely.</p>"


def _what(address: str) -> str:
    return "emails" if "@" in address else "messages"


def _public_url(hub: Hub, request: Request[Any, Any, Any]) -> str:
    """The URL the provider called as it was handed out: what its signature covers."""
    base = hub.settings.public_url
    if base is None:
        return str(request.url)
    raw = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    path = raw.decode("latin-1")
    return f"{base}{path}?{query.decode('latin-1')}" if query else f"{base}{path}"


def _form(hub: Hub, request: Request[Any, Any, Any], body: bytes) -> dict[str, str]:
    """A form post's fields, the first value of each; none for another body."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    try:
        pairs = parse_qsl(
            body.decode(),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=delivery.MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        raise InputError("the form is not valid", [FieldError("body", "not UTF-8 text")]) from None
    except ValueError:  # more fields than max_num_fields
        raise delivery.too_large(hub, body, delivery.MAX_FORM_FIELDS + 1) or InputError(
            "the form is not valid"
        ) from None
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    return form


def handlers(hub: Hub) -> list[HTTPRouteHandler]:
    limit = hub.settings.max_event_bytes

    @post(
        "/v1/callbacks/{name:str}/{key:str}",
        status_code=200,
        request_max_body_size=limit,
        security=[],
        summary="A provider reports on a message (delivery status, an inbound reply)",
        description="Called by the provider, not by you: the URL (from LINKTIME_PUBLIC_URL) "
        "names the account, and the plugin that registered the callback checks the "
        "provider's signature (403 and nothing stored when it is wrong). Replayed and "
        "out-of-order reports change nothing: a delivery status only moves forward.",
    )
    async def provider_callback(
        request: Request[Any, Any, Any], name: FromPath[str], key: FromPath[str]
    ) -> Response[str]:
        body = await request.body()
        form = _form(hub, request, body)
        answer = await offload(
            delivery.receive,
            hub,
            name,
            key,
            _public_url(hub, request),
            request.headers,
            form,
            body,
        )
        return Response(answer.body, status_code=200, media_type=answer.media_type)

    @get(
        "/v1/unsubscribe/{token:str}",
        security=[],
        summary="The page of an email's unsubscribe link: asks, changes nothing",
        description="A GET never unsubscribes (mail scanners open links); the page's button "
        "POSTs to the same URL.",
    )
    async def unsubscribe_page(token: FromPath[str]) -> Response[str]:
        try:
            target = await offload(delivery.unsubscribe_target, hub, token)
        except NotFound:
            return _page("Link not valid", _INVALID, 404)
        question = (
            f"<p>Unsubscribe <strong>{escape(target.address)}</strong> from "
            f"{escape(target.account_name)}'s {_what(target.address)}?</p>"
            '<form method="post"><input type="hidden" name="List-Unsubscribe" '
            'value="One-Click"><button type="submit">Unsubscribe</button></form>'
        )
        return _page("Unsubscribe", question)

    @post(
        "/v1/unsubscribe/{token:str}",
        status_code=200,
        request_max_body_size=4096,
        security=[],
        summary="One-click unsubscribe (RFC 8058): the address goes on the suppression list",
        description="What a mail client POSTs (body `List-Unsubscribe=One-Click`), or the "
        "unsubscribe page's button.",
    )
    async def unsubscribe(token: FromPath[str]) -> Response[str]:
        try:
            target = await offload(delivery.unsubscribe, hub, token)
        except NotFound:
            return _page("Link not valid", _INVALID, 404)
        done = (
            f"<p><strong>{escape(target.address)}</strong> will get no more "
            f"{_what(target.address)} from {escape(target.account_name)}.</p>"
        )
        return _page("You are unsubscribed", done)

    return [provider_callback, unsubscribe_page, unsubscribe]
