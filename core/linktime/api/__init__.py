"""The HTTP API (Litestar). Every route but /healthz and /schema takes ``Authorization: Bearer
<api key>`` and sees only that key's account."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any

from litestar import Litestar, Request, Response, delete, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.enums import RequestEncodingType
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    SerializationException,
    ValidationException,
)
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import Components, SecurityScheme
from litestar.openapi.spec.enums import OpenAPIFormat
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter
from litestar.plugins.pydantic import PydanticInitPlugin
from litestar.status_codes import HTTP_202_ACCEPTED
from litestar.types.internal_types import PathParameterDefinition
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy import text

from .. import accounts, activity, credits, integrations, logs, runs, testruns, workflows
from ..accounts import authenticate
from ..dashboard import DashboardPlugin
from ..engine import Hub
from ..errors import FieldError, InputError, NotFound, pydantic_fields
from ..inputs import MAX_JSON_DEPTH, too_deep
from ..integrations import IntegrationOut
from ..models import BookingEvent, Timestamp
from ..offload import offload
from ..runs import EventInspection, RunOut, RunSummary
from ..statuses import RunStatus
from ..testruns import TestRunOut
from ..workflows import TemplateOut, WorkflowIn, WorkflowOut
from . import admin, callbacks, conditions, docs, endpoints, sources, suppressions
from .metrics import MetricsPlugin
from .schemas import (
    ConflictOut,
    ErrorField,
    ErrorOut,
    EventAccepted,
    PlanOut,
    PluginsOut,
    RunRef,
    TestRequest,
    WorkflowSaved,
)

log = logging.getLogger(__name__)


ERROR_RESPONSES = {
    code: ResponseSpec(data_container=ErrorOut, description=text)
    for code, text in (
        (400, "Bad request"),
        (401, "Missing or invalid API key"),
        (403, "Not allowed by the plan"),
        (404, "Not found (or another account's)"),
        (409, "Conflict with the current state"),
        (413, "Body too large"),
        (422, "Invalid input, the fields at fault named"),
        (500, "A bug on the server's side (logged; no details given)"),
    )
}


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


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # A bug, not bad input: logged in full here, and the caller learns nothing of the internals.
    path = logs.redact(request.url.path)
    log.error("unexpected error on %s %s", request.method, path, exc_info=exc)
    return _error(500, "internal_error", "something went wrong on our side; it has been logged")


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _validate_body(model: type[BaseModel], value: Any) -> BaseModel:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise InputError("the request is not valid", pydantic_fields(exc)) from None


class _BodiesAsDeclared(PydanticInitPlugin):
    """Litestar validates request bodies with ``strict=False``, which overrides a model's own
    strictness; bodies are validated as each model declares (``WorkflowIn`` is strict: a string
    is not a boolean)."""

    @classmethod
    def decoders(cls, validate_strict: bool = False) -> list[tuple[Callable[[Any], bool], Any]]:
        return [(_is_model, _validate_body), *super().decoders(validate_strict)]


async def _read_json(request: Request[Any, Any, Any]) -> None:
    """Decode a route's JSON body before the route does (Litestar keeps the result), so that
    an empty body, malformed JSON, a value that is not an object, a number out of range or
    nesting too deep is a 422 naming where, not a 400 outside the error shape, a 422 naming
    Litestar's own argument (``data``) or a 500 deep inside pydantic."""
    data_field = request.route_handler.parsed_data_field
    definition = data_field.kwarg_definition if data_field is not None else None
    if getattr(definition, "media_type", None) != RequestEncodingType.JSON:
        return
    # Litestar would name its own argument, `data`; every JSON body the API takes is an object.
    if not (await request.body()).strip():
        raise InputError("the body is empty", [FieldError("body", "the body is empty")])
    try:
        data = await request.json()
    except SerializationException as exc:
        raise InputError("the body is not valid JSON", [FieldError("body", str(exc))]) from None
    except RecursionError:
        # msgspec gives up on nesting about 1,000 deep (the attacker's choice) with this error.
        raise InputError(
            "the body nests too deep",
            [FieldError("body", f"nested deeper than {MAX_JSON_DEPTH} levels")],
        ) from None
    if not isinstance(data, dict):
        raise InputError(
            "the body is not a JSON object", [FieldError("body", "must be a JSON object")]
        )
    where = too_deep(data)
    if where is not None:
        raise InputError(
            "the body nests too deep",
            [FieldError(where, f"nested deeper than {MAX_JSON_DEPTH} levels")],
        )


async def _before_request(request: Request[Any, Any, Any]) -> None:
    await _refuse_nul(request)
    await _read_json(request)


async def _refuse_nul(request: Request[Any, Any, Any]) -> None:
    """NUL characters cannot be stored (PostgreSQL text and JSONB refuse them): refuse them at
    the door, naming where, instead of failing deep inside."""
    where = None
    if b"%00" in request.scope.get("query_string", b"") or "\x00" in request.url.path:
        where = "query" if b"%00" in request.scope.get("query_string", b"") else "path"
    elif request.method in ("POST", "PUT", "PATCH"):
        body = await request.body()
        form = request.headers.get("content-type", "").startswith("application/x-www-form")
        if b"\x00" in body or b"\\u0000" in body or (form and b"%00" in body):
            where = "body"
    if where is not None:
        raise InputError(
            "NUL characters are not allowed",
            [FieldError(where, "contains a NUL character")],
            status=400,
        )


# Taken as text and read as an event's timestamps are (Litestar's own datetime parameters take
# a naive time, "17", or a year the database cannot store).
MomentQuery = Annotated[
    str | None,
    QueryParameter(
        format=OpenAPIFormat.DATE_TIME,
        description="ISO 8601 with a timezone, e.g. 2026-11-24T10:00:00Z",
    ),
]
_MOMENT = TypeAdapter(Timestamp)


def _moment(field: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return _MOMENT.validate_python(value)
    except ValidationError as exc:
        raise InputError("the request is not valid", pydantic_fields(exc, field)) from None


def _operation_id(
    handler: HTTPRouteHandler, method: str, path: list[str | PathParameterDefinition]
) -> str:
    # From method and path: unique and stable whatever the handler functions are called.
    parts = [p.name if isinstance(p, PathParameterDefinition) else p for p in path]
    return method.lower() + "".join(part.title().replace("_", "") for part in parts)


def create_app(
    hub: Hub,
    *,
    on_startup: Sequence[Callable[[], None]] = (),
    on_shutdown: Sequence[Callable[[], None]] = (),
) -> Litestar:
    async def provide_account(request: Request[Any, Any, Any]) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        account_id = (
            await offload(authenticate, hub, key.strip()) if scheme.lower() == "bearer" else None
        )
        if account_id is None:
            raise NotAuthorizedException("missing or invalid API key (Authorization: Bearer lt_…)")
        return account_id

    @post(
        "/v1/events",
        status_code=HTTP_202_ACCEPTED,
        request_max_body_size=hub.settings.max_event_bytes,
        summary="Receive a booking event",
        description="Idempotent on the event id: a replay answers like the first time and "
        "starts nothing (header Idempotent-Replayed: true).",
    )
    async def post_event(
        data: JSONBody[BookingEvent], account_id: NamedDependency[str]
    ) -> Response[EventAccepted]:
        ingested = await offload(hub.emit, data, account_id=account_id)
        headers = {"Idempotent-Replayed": "true"} if ingested.replayed else {}
        return Response(
            EventAccepted.model_validate(ingested.answer),
            status_code=HTTP_202_ACCEPTED,
            headers=headers,
        )

    @post("/v1/workflows", summary="Create a workflow")
    async def create_workflow(
        data: JSONBody[WorkflowIn], account_id: NamedDependency[str]
    ) -> WorkflowSaved:
        created, generated = await offload(workflows.create, hub, account_id, data)
        return WorkflowSaved(**created.model_dump(), generated_secrets=generated)

    @get("/v1/workflows", summary="List workflows")
    async def list_workflows(account_id: NamedDependency[str]) -> list[WorkflowOut]:
        return await offload(workflows.list_all, hub, account_id)

    @get("/v1/workflows/{workflow_id:str}", summary="Get a workflow")
    async def get_workflow(
        workflow_id: FromPath[str], account_id: NamedDependency[str]
    ) -> WorkflowOut:
        return await offload(workflows.get, hub, account_id, workflow_id)

    @put(
        "/v1/workflows/{workflow_id:str}",
        summary="Replace a workflow",
        description="A secret left out or sent masked keeps its stored value (steps are "
        "matched by `id`, else by position and action); one generated for a new step is in "
        "`generated_secrets`, shown once.",
    )
    async def update_workflow(
        workflow_id: FromPath[str], data: JSONBody[WorkflowIn], account_id: NamedDependency[str]
    ) -> WorkflowSaved:
        updated, generated = await offload(workflows.update, hub, account_id, workflow_id, data)
        return WorkflowSaved(**updated.model_dump(), generated_secrets=generated)

    @delete(
        "/v1/workflows/{workflow_id:str}",
        summary="Delete a workflow (its pending runs are cancelled)",
    )
    async def delete_workflow(workflow_id: FromPath[str], account_id: NamedDependency[str]) -> None:
        await offload(workflows.delete, hub, account_id, workflow_id)

    @post("/v1/workflows/{workflow_id:str}/enable", status_code=200)
    async def enable_workflow(
        workflow_id: FromPath[str], account_id: NamedDependency[str]
    ) -> WorkflowOut:
        return await offload(workflows.set_enabled, hub, account_id, workflow_id, True)

    @post("/v1/workflows/{workflow_id:str}/disable", status_code=200)
    async def disable_workflow(
        workflow_id: FromPath[str], account_id: NamedDependency[str]
    ) -> WorkflowOut:
        return await offload(workflows.set_enabled, hub, account_id, workflow_id, False)

    @get("/v1/runs/{run_id:str}", summary="A run with its steps and attempts")
    async def get_run(run_id: FromPath[str], account_id: NamedDependency[str]) -> RunOut:
        return RunOut.of(await offload(runs.get_run, hub, account_id, run_id))

    @post("/v1/workflows/{workflow_id:str}/test", status_code=200, summary="Test a workflow")
    async def test_workflow(
        workflow_id: FromPath[str], data: JSONBody[TestRequest], account_id: NamedDependency[str]
    ) -> TestRunOut:
        """``dry_run`` renders every step and sends nothing, each step saying whether it is
        ``ready`` and, if not, the ``problems`` that would stop it (what, the fix, where to
        make it); ``live`` sends to the test recipients, marked as a test. Works before the
        workflow is enabled."""
        if data.mode == "dry_run":
            return await offload(testruns.dry_run, hub, account_id, workflow_id, data.event)
        return await offload(
            testruns.live, hub, account_id, workflow_id, data.recipients, data.event
        )

    @get("/v1/templates", summary="Ready-made workflows the plan allows")
    async def list_templates(account_id: NamedDependency[str]) -> list[TemplateOut]:
        return await offload(workflows.list_templates, hub, account_id)

    @post("/v1/templates/{name:str}/workflows", summary="Create a workflow from a template")
    async def from_template(name: FromPath[str], account_id: NamedDependency[str]) -> WorkflowSaved:
        created, generated = await offload(workflows.create_from_template, hub, account_id, name)
        return WorkflowSaved(**created.model_dump(), generated_secrets=generated)

    @get("/v1/runs", summary="Runs, newest first, filtered by workflow, status and time")
    async def list_runs(
        account_id: NamedDependency[str],
        workflow_id: FromQuery[str | None] = None,
        status: FromQuery[RunStatus | None] = None,
        since: MomentQuery = None,
        until: MomentQuery = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: Annotated[
            str | None,
            QueryParameter(description="The last run of a page: the next page, older, follows it"),
        ] = None,
    ) -> list[RunSummary]:
        return await offload(
            runs.list_runs,
            hub,
            account_id,
            workflow_id=workflow_id,
            status=status,
            since=_moment("since", since),
            until=_moment("until", until),
            limit=limit,
            cursor=cursor,
        )

    @post(
        "/v1/runs/{run_id:str}/replay",
        summary="Run a failed run again from its failed step",
        description="With an `Idempotency-Key` header, a repeated request answers the first "
        "one's replay and makes nothing (header Idempotent-Replayed: true). A run whose replay "
        "has not finished is not replayed again: 409 `replay_pending` naming that replay.",
    )
    async def replay_run(
        run_id: FromPath[str],
        account_id: NamedDependency[str],
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(name="Idempotency-Key", description=f"Up to {runs.MAX_KEY} characters"),
        ] = None,
    ) -> Response[RunRef]:
        made = await offload(runs.replay, hub, account_id, run_id, idempotency_key)
        return Response(
            RunRef(id=made.run_id, workflow_id=made.workflow_id),
            status_code=201,
            headers={"Idempotent-Replayed": "true"} if made.repeated else {},
        )

    @get(
        "/v1/events",
        summary="Events received, newest first",
        description="`q` finds an event by its id or its booking's uid (exactly) or by the "
        "invitee's email (in any case). A page with more after it gives `next_cursor`.",
    )
    async def list_events(
        account_id: NamedDependency[str],
        q: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=activity.MAX_LIMIT)] = 50,
        cursor: FromQuery[str | None] = None,
    ) -> activity.EventPage:
        return await offload(activity.list_events, hub, account_id, q, limit, cursor)

    @get(
        "/v1/bookings/{uid:str}/timeline",
        summary="A booking's events, planned reminders, runs and attempts, in time order",
    )
    async def booking_timeline(
        uid: FromPath[str], account_id: NamedDependency[str]
    ) -> activity.Timeline:
        return await offload(activity.timeline, hub, account_id, uid)

    @get("/v1/events/{event_id:str}", summary="What an event did: runs, and why not the others")
    async def inspect_event(
        event_id: FromPath[str], account_id: NamedDependency[str]
    ) -> EventInspection:
        return await offload(runs.inspect_event, hub, account_id, event_id)

    @get("/v1/plan", summary="The account's plan: active workflows and SMS credits used")
    async def get_plan(account_id: NamedDependency[str]) -> PlanOut:
        usage = await offload(workflows.plan_usage, hub, account_id)
        sms = await offload(credits.sms_usage, hub, account_id)
        return PlanOut(**vars(usage), sms_credits=sms.out())

    @get("/v1/api-keys", summary="The account's API keys (never the keys themselves)")
    async def list_keys(account_id: NamedDependency[str]) -> list[accounts.KeyOut]:
        return await offload(accounts.list_keys, hub, account_id)

    @post("/v1/api-keys", summary="Create an API key: shown this once")
    async def create_key(account_id: NamedDependency[str]) -> accounts.NewKey:
        return await offload(accounts.create_key, hub, account_id)

    @post("/v1/api-keys/{key_id:str}/revoke", status_code=200, summary="Revoke an API key")
    async def revoke_key(
        key_id: FromPath[str], account_id: NamedDependency[str]
    ) -> accounts.KeyOut:
        return await offload(accounts.revoke_key, hub, account_id, key_id)

    @get("/v1/integrations", summary="Integrations and whether connected")
    async def list_integrations(account_id: NamedDependency[str]) -> list[IntegrationOut]:
        return await offload(integrations.list_all, hub, account_id)

    @get("/v1/integrations/{name:str}", summary="One integration, masked")
    async def get_integration(
        name: FromPath[str], account_id: NamedDependency[str]
    ) -> IntegrationOut:
        return await offload(integrations.get, hub, account_id, name)

    @put(
        "/v1/integrations/{name:str}",
        summary="Connect an integration (secrets are write-only)",
    )
    async def put_integration(
        name: FromPath[str], data: JSONBody[dict[str, Any]], account_id: NamedDependency[str]
    ) -> IntegrationOut:
        return await offload(integrations.connect, hub, account_id, name, data)

    @delete(
        "/v1/integrations/{name:str}",
        summary="Disconnect",
    )
    async def delete_integration(name: FromPath[str], account_id: NamedDependency[str]) -> None:
        await offload(integrations.disconnect, hub, account_id, name)

    @get("/v1/plugins", summary="Installed triggers and actions")
    async def list_plugins(account_id: NamedDependency[str]) -> PluginsOut:
        reg = hub.registry
        return PluginsOut(
            triggers=sorted(reg.triggers),
            actions=sorted(reg.actions),
            broken=[{"name": b.name, "error": b.error} for b in reg.broken],
            conflicts=[
                ConflictOut(
                    kind=c.kind,
                    name=c.name,
                    distributions=[claimant.distribution for claimant in c.claimants],
                    chosen=c.chosen.distribution if c.chosen else None,
                    message=c.describe(),
                )
                for c in reg.conflicts
            ],
        )

    @get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        def ping() -> None:
            with hub.db.connect() as conn:
                conn.execute(text("SELECT 1"))

        await offload(ping)
        return {"status": "ok"}

    api_handlers = [
        post_event,
        create_workflow,
        list_workflows,
        get_workflow,
        update_workflow,
        delete_workflow,
        enable_workflow,
        disable_workflow,
        get_run,
        test_workflow,
        list_keys,
        create_key,
        revoke_key,
        list_templates,
        from_template,
        list_runs,
        replay_run,
        list_events,
        inspect_event,
        booking_timeline,
        get_plan,
        list_integrations,
        get_integration,
        put_integration,
        delete_integration,
        list_plugins,
        healthz,
        *admin.handlers(hub),
        *callbacks.handlers(hub),
        *suppressions.handlers(hub),
        *endpoints.handlers(hub),
        *conditions.handlers(),
        *sources.handlers(hub),
    ]
    for handler in api_handlers:  # document the one error shape every route answers with
        handler.responses = {**ERROR_RESPONSES, **(handler.responses or {})}

    return Litestar(
        route_handlers=[*api_handlers, docs.assets()],
        dependencies={"account_id": Provide(provide_account)},
        exception_handlers={
            InputError: _on_input_error,
            NotFound: _on_not_found,
            ValidationException: _on_validation,
            HTTPException: _on_http,
            Exception: _on_unexpected,
        },
        openapi_config=OpenAPIConfig(
            title="LinkTime Workflows",
            version="1",
            path="/schema",
            operation_id_creator=_operation_id,
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer"),
                    **admin.SECURITY_SCHEMES,
                }
            ),
            security=[{"bearer": []}],
            render_plugins=docs.render_plugins(),
            openapi_router=docs.router(),
        ),
        before_request=_before_request,
        # The process's logging is the command's (linktime.logs, LINKTIME_LOG_FORMAT), not
        # Litestar's own root logger setup.
        logging_config=None,
        on_startup=list(on_startup),
        on_shutdown=list(on_shutdown),
        # dashboard: the server-rendered pages under / (routes, session, CSRF, templates, static)
        plugins=[DashboardPlugin(hub), MetricsPlugin(hub), _BodiesAsDeclared()],
    )
