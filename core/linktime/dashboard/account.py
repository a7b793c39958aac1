"""Signing in and out with an API key."""

from __future__ import annotations

from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from ..engine import Hub
from ..offload import offload
from .app import (
    AnyRequest,
    page,
    safe_next,
    see_other,
)
from .session import (
    key_id_for,
)


@get("/")
async def home() -> Redirect:
    return Redirect("/workflows")


@get("/login")
async def login_page(request: AnyRequest, next: FromQuery[str | None] = None) -> Template:
    return page(request, "login.html", next=safe_next(next), error=None)


@post("/login")
async def login(request: AnyRequest, hub: NamedDependency[Hub]) -> Template | Redirect:
    form = await request.form()
    key = str(form.get("api_key", "")).strip()
    found = await offload(key_id_for, hub, key) if key else None
    target = safe_next(form.get("next"))
    if found is None:
        return page(
            request,
            "login.html",
            status=401,
            next=target,
            error="That API key is not valid (or was revoked).",
        )
    # A fresh session: new CSRF token, nothing carried over from before sign-in.
    request.set_session({"key_id": found[1]})
    return see_other(target)


@post("/logout")
async def logout(request: AnyRequest) -> Redirect:
    request.clear_session()
    return see_other("/login")


HANDLERS = [home, login_page, login, logout]
