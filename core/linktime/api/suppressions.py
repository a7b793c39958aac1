"""The account's suppression list: /v1/suppressions."""

from __future__ import annotations

from typing import Annotated

from litestar import Response, delete, get, post
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from .. import suppressions
from ..engine import Hub
from ..errors import NotFound
from ..offload import offload
from ..suppressions import SuppressionIn, SuppressionOut, SuppressionPage


def _remove(hub: Hub, account_id: str, address: str) -> None:
    if not suppressions.remove_manual(hub, account_id, address):
        raise NotFound(f"{address!r} is not on the suppression list")


def handlers(hub: Hub) -> list[HTTPRouteHandler]:
    @get(
        "/v1/suppressions",
        summary="The suppression list: addresses no step sends to, newest first",
        description="One list for every channel: numbers that replied STOP (or that the "
        "provider reported as opted out), email addresses that unsubscribed, and addresses "
        "added by hand. `q` keeps the addresses containing it. A page with more after it "
        "gives `next_cursor`.",
    )
    async def list_suppressions(
        account_id: NamedDependency[str],
        q: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=suppressions.MAX_LIMIT)] = 50,
        cursor: FromQuery[str | None] = None,
    ) -> SuppressionPage:
        return await offload(suppressions.page, hub, account_id, q, limit, cursor)

    @post(
        "/v1/suppressions",
        summary="Add an address to the suppression list",
        description="201 with the new entry; an address already on the list answers 200 with "
        "its existing entry, unchanged.",
        responses={
            200: ResponseSpec(data_container=SuppressionOut, description="Already on the list")
        },
    )
    async def add_suppression(
        data: JSONBody[SuppressionIn], account_id: NamedDependency[str]
    ) -> Response[SuppressionOut]:
        found, added = await offload(suppressions.add_manual, hub, account_id, data)
        return Response(found, status_code=201 if added else 200)

    @delete(
        "/v1/suppressions/{address:str}",
        summary="Take an address off the suppression list: steps send to it again",
    )
    async def remove_suppression(address: FromPath[str], account_id: NamedDependency[str]) -> None:
        await offload(_remove, hub, account_id, address)

    return [list_suppressions, add_suppression, remove_suppression]
