"""Settings: connecting and disconnecting an account's integrations."""

from __future__ import annotations

from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template
from pydantic import BaseModel

from .. import integrations
from ..engine import Hub
from ..errors import FieldError, InputError, NotFound
from ..offload import offload
from . import forms
from .app import (
    AnyRequest,
    Me,
    action_title,
    flash,
    page,
    place_errors,
    see_other,
)
from .forms import FieldSpec, Raw


def _credential_models(hub: Hub, name: str) -> list[type[BaseModel]]:
    models: list[type[BaseModel]] = []
    for a in hub.registry.actions.values():
        if a.integration == name and a.credentials is not None and a.credentials not in models:
            models.append(a.credentials)
    return models


def _credential_specs(models: list[type[BaseModel]]) -> list[FieldSpec]:
    specs: dict[str, FieldSpec] = {}
    for model in models:
        for spec in forms.fields_of(model):
            specs.setdefault(spec.name, spec)
    return list(specs.values())


async def _integrations_page(
    request: AnyRequest,
    hub: Hub,
    me: Me,
    *,
    failed: str | None = None,
    raw: dict[str, Raw] | None = None,
    errors: list[FieldError] | None = None,
    status: int = 200,
) -> Template:
    items = await offload(integrations.list_all, hub, me.account_id)
    cards = []
    for item in items:
        specs = _credential_specs(_credential_models(hub, item.name))
        values, secrets_set = forms.from_stored(specs, item.settings or {})
        placed: dict[str, list[str]] = {}
        general: list[FieldError] = []
        if item.name == failed:
            placed, general = place_errors(errors or [], {s.name for s in specs})
            values = {**values, **(raw or {})}
            for s in specs:
                if s.kind == "password":
                    values[s.name] = ""
        cards.append(
            {
                "name": item.name,
                "connected": item.connected,
                "updated_at": item.updated_at,
                "actions": [action_title(hub, a) for a in item.actions],
                "fields": specs,
                "values": values,
                "secrets_set": secrets_set,
                "errors": placed,
                "labels": {s.name: s.label for s in specs},
                "general_errors": general,
                "callbacks": item.callbacks,
            }
        )
    return page(request, "integrations.html", me=me, status=status, cards=cards)


@get("/settings/integrations")
async def integrations_page(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me]
) -> Template:
    return await _integrations_page(request, hub, me)


def _connect(
    hub: Hub, account_id: str, name: str, specs: list[FieldSpec], raw: dict[str, Raw]
) -> None:
    parsed = forms.parse(specs, raw)
    if parsed.errors:
        raise InputError(f"the {name} settings are not valid", parsed.errors)
    # A secret left blank is left out: the core keeps the stored one.
    integrations.connect(hub, account_id, name, parsed.data)


@post("/settings/integrations/{name:str}")
async def connect_integration(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me], name: FromPath[str]
) -> Template | Redirect:
    models = _credential_models(hub, name)
    if not models:
        raise NotFound(f"no integration {name!r}")
    specs = _credential_specs(models)
    form = await request.form()
    raw = forms.read_raw(specs, {k: str(v) for k, v in form.items()}, "")
    try:
        await offload(_connect, hub, me.account_id, name, specs, raw)
    except InputError as exc:
        return await _integrations_page(
            request,
            hub,
            me,
            failed=name,
            raw=raw,
            errors=exc.fields or [FieldError("integration", exc.message)],
            status=exc.status,
        )
    flash(request, f"{name.capitalize()} is connected.")
    return see_other("/settings/integrations")


@post("/settings/integrations/{name:str}/disconnect")
async def disconnect_integration(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me], name: FromPath[str]
) -> Redirect:
    await offload(integrations.disconnect, hub, me.account_id, name)
    flash(request, f"{name.capitalize()} is disconnected; its stored settings were deleted.")
    return see_other("/settings/integrations")


HANDLERS = [integrations_page, connect_integration, disconnect_integration]
