"""Webhook endpoints: their health, re-enabling, secret rotation and example deliveries."""

from __future__ import annotations

from litestar import get, post
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from .. import endpoints, workflows
from ..endpoints import EndpointDetail, EndpointOut, ExampleSent, Position
from ..engine import Hub
from ..offload import offload
from ..workflows import RotatedSecret


def handlers(hub: Hub) -> list[HTTPRouteHandler]:
    @get(
        "/v1/endpoints",
        summary="Every webhook endpoint of the account, its state and 24-hour success rate",
    )
    async def list_endpoints(account_id: NamedDependency[str]) -> list[EndpointOut]:
        return await offload(endpoints.list_endpoints, hub, account_id)

    @get("/v1/endpoints/{endpoint_id:str}", summary="One endpoint with its recent deliveries")
    async def get_endpoint(
        endpoint_id: FromPath[str], account_id: NamedDependency[str]
    ) -> EndpointDetail:
        return await offload(endpoints.get_endpoint, hub, account_id, endpoint_id)

    @post(
        "/v1/endpoints/{endpoint_id:str}/enable",
        status_code=200,
        summary="Re-enable a disabled endpoint: its steps are sent again",
    )
    async def enable_endpoint(
        endpoint_id: FromPath[str], account_id: NamedDependency[str]
    ) -> EndpointDetail:
        return await offload(endpoints.reenable, hub, account_id, endpoint_id)

    @post(
        "/v1/workflows/{workflow_id:str}/steps/{position:int}/rotate-secret",
        status_code=200,
        summary="Give a webhook step a new signing secret (shown this once)",
        description="For 24 hours deliveries carry two `v1,` signatures in "
        "`webhook-signature`, with the new and the old secret; then only the new one. 409 "
        "`nothing_to_rotate` for a step whose action has no signing secret.",
    )
    async def rotate_secret(
        workflow_id: FromPath[str], position: Position, account_id: NamedDependency[str]
    ) -> RotatedSecret:
        return await offload(workflows.rotate_secret, hub, account_id, workflow_id, position)

    @post(
        "/v1/workflows/{workflow_id:str}/steps/{position:int}/example",
        status_code=202,
        summary="Send example: a signed example delivery to one step's endpoint, as a test run",
        description="The sample booking, its event id `test_…`, delivered by a test run of "
        "that step alone (the run log shows it as a test). 409 `no_endpoint` for a step that "
        "delivers to no endpoint.",
    )
    async def send_example(
        workflow_id: FromPath[str], position: Position, account_id: NamedDependency[str]
    ) -> ExampleSent:
        return await offload(endpoints.send_example, hub, account_id, workflow_id, position)

    return [list_endpoints, get_endpoint, enable_endpoint, rotate_secret, send_example]
