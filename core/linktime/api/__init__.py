"""The HTTP API (Litestar). Every route but /healthz and /schema takes ``Authorization: Bearer
<api key>`` and sees only that key's account."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from litestar import Litestar, Request, Response, delete, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED
from sqlalchemy import text

from .. import integrations, workflows
from ..accounts import authenticate
from ..crypto import secret_fields
from ..engine import Hub
from ..errors import FieldError, InputError, NotFound
from ..integrations import IntegrationOut
from ..models import BookingEvent
from ..workflows import WorkflowIn, WorkflowOut
from .schemas import (
    ErrorField,
    ErrorOut,
    EventAccepted,
    GeneratedSecret,
    PluginsOut,
    RunOut,
    WorkflowCreated,
)


def _error(
    status: int, code: str, message: str, fields: Sequence[FieldError] = ()
) -> Response[Any]:
    body = ErrorOut(
        error=code,
        message=message,
        fields=[ErrorField(field=f.field, message=f.message) for f in fields],
    )
    return Response(body.model_dump(), status_code=status)


def _on_input_error(_: Request[Any, Any, Any], exc: InputError) -> Response[Any]:
    return _error(exc.status, exc.code, exc.message, exc.fields)


def _on_not_found(_: Request[Any, Any, Any], exc: NotFound) -> Response[Any]:
    return _error(404, "not_found", str(exc))


def _on_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    fields = [
        FieldError(str(item.get("key") or "body"), str(item.get("message")))
        for item in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(item, dict)
    ]
    return _error(422, "invalid_input", "the request is not valid", fields)


def _on_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    codes = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
    return _error(exc.status_code, codes.get(exc.status_code, "http_error"), exc.detail)


def create_app(
    hub: Hub,
    *,
    on_startup: Sequence[Callable[[], None]] = (),
    on_shutdown: Sequence[Callable[[], None]] = (),
) -> Litestar:
    def provide_account(request: Request[Any, Any, Any]) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        account_id = authenticate(hub, key.strip()) if scheme.lower() == "bearer" else None
        if account_id is None:
            raise NotAuthorizedException("missing or invalid API key (Authorization: Bearer lt_…)")
        return account_id

    @post(
        "/v1/events",
        status_code=HTTP_202_ACCEPTED,
        request_max_body_size=hub.settings.max_event_bytes,
        sync_to_thread=True,
        summary="Receive a booking event",
        description="Idempotent on the event id: a replay answers like the first time and "
        "starts nothing (header Idempotent-Replayed: true).",
    )
    def post_event(
        data: JSONBody[BookingEvent], account_id: NamedDependency[str]
    ) -> Response[EventAccepted]:
        ingested = hub.emit(data, account_id=account_id)
        headers = {"Idempotent-Replayed": "true"} if ingested.replayed else {}
        return Response(
            EventAccepted.model_validate(ingested.answer),
            status_code=HTTP_202_ACCEPTED,
            headers=headers,
        )

    @post("/v1/workflows", sync_to_thread=True, summary="Create a workflow")
    def create_workflow(
        data: JSONBody[WorkflowIn], account_id: NamedDependency[str]
    ) -> WorkflowCreated:
        created, revealed = workflows.create(hub, account_id, data)
        generated = [
            GeneratedSecret(step=i, field=name, value=revealed[i][name])
            for i, step in enumerate(data.steps)
            for name in secret_fields(hub.registry.actions[step.action].settings)
            if name not in step.settings and revealed[i].get(name)
        ]
        return WorkflowCreated(**created.model_dump(), generated_secrets=generated)

    @get("/v1/workflows", sync_to_thread=True, summary="List workflows")
    def list_workflows(account_id: NamedDependency[str]) -> list[WorkflowOut]:
        return workflows.list_all(hub, account_id)

    @get("/v1/workflows/{workflow_id:str}", sync_to_thread=True, summary="Get a workflow")
    def get_workflow(workflow_id: FromPath[str], account_id: NamedDependency[str]) -> WorkflowOut:
        return workflows.get(hub, account_id, workflow_id)

    @put("/v1/workflows/{workflow_id:str}", sync_to_thread=True, summary="Replace a workflow")
    def update_workflow(
        workflow_id: FromPath[str], data: JSONBody[WorkflowIn], account_id: NamedDependency[str]
    ) -> WorkflowOut:
        return workflows.update(hub, account_id, workflow_id, data)

    @delete(
        "/v1/workflows/{workflow_id:str}",
        sync_to_thread=True,
        summary="Delete a workflow (its pending runs are cancelled)",
        operation_id="DeleteWorkflow",
    )
    def delete_workflow(workflow_id: FromPath[str], account_id: NamedDependency[str]) -> None:
        workflows.delete(hub, account_id, workflow_id)

    @post("/v1/workflows/{workflow_id:str}/enable", sync_to_thread=True, status_code=200)
    def enable_workflow(
        workflow_id: FromPath[str], account_id: NamedDependency[str]
    ) -> WorkflowOut:
        return workflows.set_enabled(hub, account_id, workflow_id, True)

    @post("/v1/workflows/{workflow_id:str}/disable", sync_to_thread=True, status_code=200)
    def disable_workflow(
        workflow_id: FromPath[str], account_id: NamedDependency[str]
    ) -> WorkflowOut:
        return workflows.set_enabled(hub, account_id, workflow_id, False)

    @get("/v1/runs/{run_id:str}", sync_to_thread=True, summary="A run with its steps and attempts")
    def get_run(run_id: FromPath[str], account_id: NamedDependency[str]) -> RunOut:
        return RunOut.of(hub.get_run(account_id, run_id))

    @get("/v1/integrations", sync_to_thread=True, summary="Integrations and whether connected")
    def list_integrations(account_id: NamedDependency[str]) -> list[IntegrationOut]:
        return integrations.list_all(hub, account_id)

    @get("/v1/integrations/{name:str}", sync_to_thread=True, summary="One integration, masked")
    def get_integration(name: FromPath[str], account_id: NamedDependency[str]) -> IntegrationOut:
        return integrations.get(hub, account_id, name)

    @put(
        "/v1/integrations/{name:str}",
        sync_to_thread=True,
        summary="Connect an integration (secrets are write-only)",
        operation_id="PutIntegration",
    )
    def put_integration(
        name: FromPath[str], data: JSONBody[dict[str, Any]], account_id: NamedDependency[str]
    ) -> IntegrationOut:
        return integrations.connect(hub, account_id, name, data)

    @delete(
        "/v1/integrations/{name:str}",
        sync_to_thread=True,
        summary="Disconnect",
        operation_id="DeleteIntegration",
    )
    def delete_integration(name: FromPath[str], account_id: NamedDependency[str]) -> None:
        integrations.disconnect(hub, account_id, name)

    @get("/v1/plugins", sync_to_thread=True, summary="Installed triggers and actions")
    def list_plugins(account_id: NamedDependency[str]) -> PluginsOut:
        reg = hub.registry
        return PluginsOut(
            triggers=sorted(reg.triggers),
            actions=sorted(reg.actions),
            broken=[{"name": b.name, "error": b.error} for b in reg.broken],
        )

    @get("/healthz", sync_to_thread=True, include_in_schema=False)
    def healthz() -> dict[str, str]:
        with hub.db.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"status": "ok"}

    return Litestar(
        route_handlers=[
            post_event,
            create_workflow,
            list_workflows,
            get_workflow,
            update_workflow,
            delete_workflow,
            enable_workflow,
            disable_workflow,
            get_run,
            list_integrations,
            get_integration,
            put_integration,
            delete_integration,
            list_plugins,
            healthz,
        ],
        dependencies={"account_id": Provide(provide_account, sync_to_thread=False)},
        exception_handlers={
            InputError: _on_input_error,
            NotFound: _on_not_found,
            ValidationException: _on_validation,
            HTTPException: _on_http,
        },
        openapi_config=OpenAPIConfig(
            title="LinkTime Workflows",
            version="1",
            path="/schema",
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
            ),
            security=[{"bearer": []}],
        ),
        on_startup=list(on_startup),
        on_shutdown=list(on_shutdown),
    )
