"""The operator's API under /v1/admin: accounts, their usage, their plan. It takes the
operator's own token (``Authorization: Bearer <LINKTIME_ADMIN_TOKEN>``), never an account's API
key; without that setting the admin API is off and every route answers 404."""

from __future__ import annotations

import hmac
from typing import Any

from litestar import get, put
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, NotFoundException
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import SecurityScheme
from litestar.params import FromPath, JSONBody
from pydantic import SecretStr

from .. import admin
from ..engine import Hub
from ..offload import offload
from .schemas import ErrorOut

SCHEME = "admin_token"
SECURITY_SCHEMES = {
    SCHEME: SecurityScheme(
        type="http",
        scheme="bearer",
        description="The operator's token, LINKTIME_ADMIN_TOKEN (not an account's API key)",
    )
}
_RESPONSES = {
    401: ResponseSpec(data_container=ErrorOut, description="Missing or wrong admin token"),
    404: ResponseSpec(
        data_container=ErrorOut,
        description="No such account, or the admin API is off (LINKTIME_ADMIN_TOKEN unset)",
    ),
}


def require_operator(connection: ASGIConnection[Any, Any, Any, Any], token: SecretStr) -> None:
    """A 401 unless the request carries the operator's ``token`` (``Authorization: Bearer``):
    the one check of /v1/admin and /metrics. Settings never hold an empty token (unset)."""
    scheme, _, given = connection.headers.get("authorization", "").partition(" ")
    # compare_digest: how long the comparison takes says nothing of the token
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.get_secret_value().encode()
    ):
        raise NotAuthorizedException(
            "missing or wrong admin token (Authorization: Bearer <LINKTIME_ADMIN_TOKEN>)"
        )


def handlers(hub: Hub) -> list[HTTPRouteHandler]:
    def operator_only(connection: ASGIConnection[Any, Any, Any, Any], _h: BaseRouteHandler) -> None:
        token = hub.settings.admin_token
        if token is None:
            raise NotFoundException("the admin API is off: the operator sets LINKTIME_ADMIN_TOKEN")
        require_operator(connection, token)

    operator: dict[str, Any] = {
        "guards": [operator_only],
        "security": [{SCHEME: []}],
        "responses": _RESPONSES,
    }

    @get("/v1/admin/accounts", summary="Every account with its plan and usage", **operator)
    async def list_accounts() -> list[admin.AccountOut]:
        return await offload(admin.list_accounts, hub)

    @get(
        "/v1/admin/accounts/{id:str}",
        summary="One account's plan, active workflows against the limit and allowed actions",
        **operator,
    )
    async def account_usage(id: FromPath[str]) -> admin.UsageOut:
        return await offload(admin.account_usage, hub, id)

    @put(
        "/v1/admin/accounts/{id:str}/plan",
        summary="Move an account to another plan",
        description="Any plan of the operator's settings. A plan allowing fewer active "
        "workflows keeps the oldest active and disables the rest (named in `paused`, their "
        "pending reminders cancelled); a plan allowing more actions applies from the next step.",
        **operator,
    )
    async def set_plan(id: FromPath[str], data: JSONBody[admin.PlanIn]) -> admin.PlanChange:
        return await offload(admin.set_plan, hub, id, data.plan)

    return [list_accounts, account_usage, set_plan]
