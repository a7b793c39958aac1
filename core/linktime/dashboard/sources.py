"""Settings → Sources: connect a booking source (Cal.com, Calendly, Stripe: whatever plugins are
installed), give the provider its inbound URL and secret (shown once, with copy buttons), rotate
the secret, send a sample, see the last deliveries and the events they became; disconnect."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template

from .. import inbound
from ..crypto import MASK
from ..engine import Hub
from ..errors import FieldError, InputError
from ..inbound import SourceIn, SourceOut
from ..offload import offload
from ..sources import SourceType
from . import forms
from .app import AnyRequest, Me, flash, page, place_errors, see_other
from .events import type_in_words
from .forms import FieldSpec, Raw

PAGE = "/settings/sources"
# What the connection's page shows once: the secret just made, the sample's outcome.
SHOWN = "source_shown"
SAMPLED = "source_sample"
STATUS_WORDS = {
    inbound.TRANSLATED: "Translated",
    inbound.IGNORED: "Ignored",
    inbound.UNTRANSLATABLE: "Untranslatable",
}


def _specs(source: SourceType) -> list[FieldSpec]:
    """The connection settings' inputs; the signing secret may be left blank (generated),
    unless the provider makes it."""
    generated = not source.secret_from_provider
    return [
        replace(s, required=not generated, generated=generated)
        if s.name == source.secret_field
        else s
        for s in forms.fields_of(source.settings)
    ]


def full_url(request: AnyRequest, url: str) -> str:
    return inbound.absolute(url, str(request.base_url))


async def _list_page(
    request: AnyRequest,
    hub: Hub,
    me: Me,
    *,
    failed: str | None = None,
    raw: dict[str, Raw] | None = None,
    errors: list[FieldError] | None = None,
    status: int = 200,
) -> Template:
    connected = await offload(inbound.list_all, hub, me.account_id)
    offers = []
    for source in sorted(hub.registry.sources.values(), key=lambda s: s.title.casefold()):
        specs = _specs(source)
        placed: dict[str, list[str]] = {}
        general: list[FieldError] = []
        values = forms.defaults(specs)
        if source.name == failed:
            # The core names settings.<field>; the form's inputs are named <field>.
            named = [FieldError(e.field.removeprefix("settings."), e.message) for e in errors or []]
            placed, general = place_errors(named, {s.name for s in specs})
            values = {
                **values,
                **(raw or {}),
                **{s.name: "" for s in specs if s.kind == "password"},
            }
        offers.append(
            {
                "source": source,
                "fields": specs,
                "values": values,
                "errors": placed,
                "general_errors": general,
                "labels": {s.name: s.label for s in specs},
            }
        )
    return page(
        request,
        "sources.html",
        me=me,
        status=status,
        connected=[(c, full_url(request, c.url)) for c in connected],
        offers=offers,
    )


@get(PAGE)
async def sources_page(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me]
) -> Template:
    return await _list_page(request, hub, me)


def _show_once(request: AnyRequest, made: SourceOut, source: SourceType) -> None:
    secret = made.settings.get(source.secret_field)
    if isinstance(secret, str) and secret != MASK:
        request.session[SHOWN] = {"id": made.id, "secret": secret}


@post(PAGE)
async def connect_source(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me]
) -> Template | Redirect:
    form = {k: str(v) for k, v in (await request.form()).items()}
    name = form.get("type", "")
    source = hub.registry.sources.get(name)
    if source is None:
        raise InputError("unknown source", [FieldError("type", f"{name!r} is not installed")])
    specs = _specs(source)
    raw = forms.read_raw(specs, form, "")
    parsed = forms.parse(specs, raw)
    try:
        if parsed.errors:
            raise InputError("the source settings are not valid", parsed.errors)
        spec = SourceIn(type=source.name, settings=parsed.data)
        made = await offload(inbound.create, hub, me.account_id, spec)
    except InputError as exc:
        return await _list_page(
            request,
            hub,
            me,
            failed=source.name,
            raw=raw,
            errors=exc.fields or [FieldError("settings", exc.message)],
            status=exc.status,
        )
    _show_once(request, made, source)
    flash(request, f"{source.title} is connected: give it the inbound URL and the secret below.")
    return see_other(f"{PAGE}/{made.id}")


def _read(hub: Hub, account_id: str, connection_id: str) -> tuple[SourceOut, list[Any]]:
    return (
        inbound.get(hub, account_id, connection_id),
        inbound.deliveries(hub, account_id, connection_id),
    )


@get(PAGE + "/{connection_id:str}")
async def source_page(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    connection_id: FromPath[str],
) -> Template:
    connection, deliveries = await offload(_read, hub, me.account_id, connection_id)
    source = hub.registry.sources.get(connection.type)
    shown = request.session.pop(SHOWN, None)
    sampled = request.session.pop(SAMPLED, None)
    return page(
        request,
        "source.html",
        me=me,
        connection=connection,
        source=source,
        url=full_url(request, connection.url),
        secret=shown["secret"] if shown and shown.get("id") == connection.id else None,
        sampled=sampled if sampled and sampled.get("id") == connection.id else None,
        deliveries=[
            {
                **d.model_dump(),
                "status_words": STATUS_WORDS.get(d.status, d.status),
                "events": [
                    {**e, "type_title": type_in_words(hub, str(e.get("type", "")))}
                    for e in d.events
                ],
            }
            for d in deliveries
        ],
    )


@post(PAGE + "/{connection_id:str}/rotate")
async def rotate_source(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    connection_id: FromPath[str],
) -> Redirect:
    given = str((await request.form()).get("secret") or "").strip() or None
    try:
        rotated = await offload(inbound.rotate, hub, me.account_id, connection_id, given)
    except InputError as exc:
        problems = "; ".join(f.message for f in exc.fields) or exc.message
        flash(request, f"The secret was not changed: {problems}", "error")
    else:
        source = hub.registry.sources[rotated.type]
        if given is None:
            _show_once(request, rotated, source)
        flash(
            request,
            "The signing secret is replaced: the old one is refused from now on. Set the new "
            f"one in {source.title}.",
        )
    return see_other(f"{PAGE}/{connection_id}")


@post(PAGE + "/{connection_id:str}/sample")
async def sample_source(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    connection_id: FromPath[str],
) -> Redirect:
    outcome: dict[str, Any] = {
        "id": connection_id,
        "error": None,
        "fields": [],
        "note": None,
        "events": [],
    }
    try:
        received = await offload(inbound.sample, hub, me.account_id, connection_id)
    except InputError as exc:
        outcome["error"] = exc.message
        outcome["fields"] = [f"{f.field}: {f.message}" for f in exc.fields]
    else:
        outcome["note"] = received.body.get("note")
        outcome["events"] = [
            {"id": e["id"], "type_title": type_in_words(hub, e["type"])}
            for e in received.body.get("events", [])
        ]
    request.session[SAMPLED] = outcome
    return see_other(f"{PAGE}/{connection_id}#sample")


@post(PAGE + "/{connection_id:str}/delete")
async def delete_source(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    connection_id: FromPath[str],
) -> Redirect:
    connection = await offload(inbound.get, hub, me.account_id, connection_id)
    await offload(inbound.remove, hub, me.account_id, connection_id)
    flash(
        request,
        f"{connection.title} is disconnected: its URL answers 404 now; remove the webhook "
        "from its settings too.",
    )
    return see_other(PAGE)


HANDLERS = [sources_page, connect_source, source_page, rotate_source, sample_source, delete_source]
