"""Booking sources: /v1/sources (the account's connections, with its API key) and the inbound
URL providers post to, /v1/sources/{id}/events (no API key: the provider's signature)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, Field

from .. import inbound
from ..engine import Hub
from ..inbound import DeliveryOut, SourceIn, SourceOut
from ..offload import offload


class RotateIn(BaseModel):
    secret: str | None = Field(
        None,
        min_length=8,
        max_length=500,
        description="Your own new secret (as the provider made it); leave out to have one "
        "generated",
    )


def _absolute(request: Request[Any, Any, Any], out: SourceOut) -> SourceOut:
    return out.model_copy(update={"url": inbound.absolute(out.url, str(request.base_url))})


def handlers(hub: Hub) -> list[HTTPRouteHandler]:
    @post(
        "/v1/sources",
        status_code=201,
        summary="Connect a booking source (Cal.com, Calendly, Stripe)",
        description="Answers the connection with its inbound URL (give it to the provider as "
        "the webhook URL) and its signing secret, shown this once when generated.",
    )
    async def create_source(
        request: Request[Any, Any, Any], data: JSONBody[SourceIn], account_id: NamedDependency[str]
    ) -> SourceOut:
        return _absolute(request, await offload(inbound.create, hub, account_id, data))

    @get("/v1/sources", summary="The account's source connections (secrets masked)")
    async def list_sources(
        request: Request[Any, Any, Any], account_id: NamedDependency[str]
    ) -> list[SourceOut]:
        return [_absolute(request, c) for c in await offload(inbound.list_all, hub, account_id)]

    @get("/v1/sources/{source_id:str}", summary="One source connection (secrets masked)")
    async def get_source(
        request: Request[Any, Any, Any], source_id: FromPath[str], account_id: NamedDependency[str]
    ) -> SourceOut:
        return _absolute(request, await offload(inbound.get, hub, account_id, source_id))

    @post(
        "/v1/sources/{source_id:str}/rotate-secret",
        status_code=200,
        summary="Replace a connection's signing secret",
        description="The old secret stops working at once: set the new one at the provider "
        "(a generated one is shown this once). Send `{}` to have one generated; like every "
        "JSON body of the API, it is an object.",
    )
    async def rotate_source_secret(
        request: Request[Any, Any, Any],
        source_id: FromPath[str],
        account_id: NamedDependency[str],
        data: JSONBody[RotateIn],
    ) -> SourceOut:
        rotated = await offload(inbound.rotate, hub, account_id, source_id, data.secret)
        return _absolute(request, rotated)

    @delete("/v1/sources/{source_id:str}", summary="Disconnect a booking source")
    async def delete_source(source_id: FromPath[str], account_id: NamedDependency[str]) -> None:
        await offload(inbound.remove, hub, account_id, source_id)

    @get(
        "/v1/sources/{source_id:str}/deliveries",
        summary="A connection's last 50 verified deliveries, newest first",
        description="What each became (translated into events, ignored, or untranslatable "
        "with the reason). Requests refused for their signature are not kept.",
    )
    async def list_source_deliveries(
        source_id: FromPath[str], account_id: NamedDependency[str]
    ) -> list[DeliveryOut]:
        return await offload(inbound.deliveries, hub, account_id, source_id)

    @post(
        "/v1/sources/{source_id:str}/sample",
        status_code=200,
        summary="Send the source's sample payload to the connection, signed as the provider "
        "signs it",
        description="Tests the connection end to end: the sample booking's events are "
        "ingested (and start the workflows they match).",
    )
    async def send_source_sample(
        source_id: FromPath[str], account_id: NamedDependency[str]
    ) -> Response[dict[str, Any]]:
        received = await offload(inbound.sample, hub, account_id, source_id)
        return Response(received.body, status_code=received.status)

    @post(
        "/v1/sources/{source_id:str}/events",
        status_code=200,
        request_max_body_size=hub.settings.max_event_bytes,
        security=[],
        summary="A provider posts a webhook (Cal.com, Calendly, Stripe)",
        description="Called by the provider, not by you: no API key; the provider's signature "
        "with the connection's secret authenticates it (401, nothing stored, when it is "
        "missing, wrong or older than 5 minutes). 200 with the events it became; 202 with a "
        "note when it becomes none; 422 naming the field it cannot translate.",
    )
    async def source_events(
        request: Request[Any, Any, Any], source_id: FromPath[str]
    ) -> Response[dict[str, Any]]:
        body = await request.body()
        received = await offload(inbound.receive, hub, source_id, request.headers, body)
        return Response(received.body, status_code=received.status)

    return [
        create_source,
        list_sources,
        get_source,
        rotate_source_secret,
        delete_source,
        list_source_deliveries,
        send_source_sample,
        source_events,
    ]
