"""Dashboard sign-in: an encrypted session cookie (Litestar's client-side session middleware,
AES-GCM with a key derived from LINKTIME_SECRET_KEY, so any number of ``serve`` processes share
it), a per-session CSRF token checked on every POST, and the signed-in account.

The session holds the id of the API key that signed in, never the key; each request checks the
key is still live, so revoking it signs its sessions out.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import replace
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.session.client_side import ClientSideSessionBackend, CookieBackendConfig
from litestar.types import Empty, Message, ScopeSession
from sqlalchemy import select

from ..accounts import authenticate
from ..engine import Hub
from ..storage import Account, ApiKey

COOKIE = "linktime_session"
SESSION_SECONDS = 12 * 60 * 60
CSRF_FIELD = "_csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class SignInRequired(Exception):
    """No live session: the page redirects to /login."""


class _Backend(ClientSideSessionBackend):
    """Litestar's cookie backend, with ``Secure`` set whenever the request came over https."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _Backend:
        # Litestar copies a router's layers when it is registered; the cipher cannot be copied
        # and needs no copy (the backend holds no per-request state).
        return self

    async def store_in_message(
        self,
        scope_session: ScopeSession,
        message: Message,
        connection: ASGIConnection[Any, Any, Any, Any],
    ) -> None:
        headers = MutableScopeHeaders.from_message(message)
        https = connection.url.scheme == "https"
        present = self.get_cookie_key_set(connection)
        written: set[str] = set()
        if scope_session and scope_session is not Empty:
            data = self.dump_data(scope_session, connection.scope)
            for cookie in self._create_session_cookies(data):
                headers.add("Set-Cookie", replace(cookie, secure=https).to_header(header=""))
                written.add(cookie.key)
        clear = {**self._clear_cookie_params, "secure": https}
        for key in present - written:
            headers.add(
                "Set-Cookie", Cookie(key=key, value="null", expires=0, **clear).to_header(header="")
            )


class SessionConfig(CookieBackendConfig):
    _backend_class = _Backend


def session_config(hub: Hub) -> SessionConfig:
    key = hashlib.sha256(b"linktime-dashboard-session\0" + hub.secret_key().encode()).digest()
    return SessionConfig(
        secret=key,
        key=COOKIE,
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="lax",
        exclude="^/static/",
    )


def csrf_token(session: dict[str, Any]) -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


async def check_csrf(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: a POST must carry the session's CSRF token in its form."""
    if connection.scope.get("method", "GET") in SAFE_METHODS:
        return
    expected = connection.session.get("csrf") if connection.scope.get("session") else None
    sent = None
    if isinstance(connection, Request):
        # The body first: Litestar parses a multipart form straight from the stream, and the
        # NUL check (a before_request hook, after guards) reads the body again. From the body,
        # the form is parsed once and kept for the handler's own request.form().
        await connection.body()
        sent = (await connection.form()).get(CSRF_FIELD)
    if not (
        isinstance(expected, str)
        and isinstance(sent, str)
        and secrets.compare_digest(expected.encode(), sent.encode())
    ):
        raise PermissionDeniedException(
            "The form's security token is missing or out of date. Reload the page and try again."
        )


def key_id_for(hub: Hub, api_key: str) -> tuple[str, str] | None:
    """(account id, API key id) for a live key, or None."""
    account_id = authenticate(hub, api_key)
    if account_id is None:
        return None
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    with hub.db.connect() as conn:
        key_id = conn.scalar(select(ApiKey.id).where(ApiKey.key_hash == digest))
    return (account_id, key_id) if key_id else None


def signed_in(hub: Hub, key_id: str) -> tuple[str, str, str, str | None] | None:
    """(account id, account name, plan, chosen timezone) while the session's key is live."""
    with hub.db.connect() as conn:
        row = conn.execute(
            select(Account.id, Account.name, Account.plan, Account.preferences)
            .join(ApiKey, ApiKey.account_id == Account.id)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        ).first()
    if row is None:
        return None
    return row.id, row.name, row.plan, (row.preferences or {}).get("timezone")
