"""Settings → Opt-outs: the suppression list, viewed and edited."""

from __future__ import annotations

from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Redirect, Template
from pydantic import ValidationError

from .. import suppressions
from ..engine import Hub
from ..errors import FieldError, InputError
from ..offload import offload
from ..suppressions import SuppressionIn, SuppressionOut
from .app import AnyRequest, Me, flash, page, people_errors, place_errors, see_other

PATH = "/settings/opt-outs"
PAGE_SIZE = 50
# Why an address is on the list, as its user reads it.
SOURCE_WORDS = {
    suppressions.SMS_STOP: "Replied STOP",
    suppressions.UNSUBSCRIBE: "Unsubscribed by email",
    suppressions.PROVIDER: "Twilio reported an opt-out",
    suppressions.MANUAL: "Added by you",
}
_LABELS = {"address": "Phone number or email address", "reason": "Reason (optional)"}


async def _opt_outs(
    request: AnyRequest,
    hub: Hub,
    me: Me,
    *,
    q: str | None = None,
    cursor: str | None = None,
    raw: dict[str, str] | None = None,
    errors: list[FieldError] | None = None,
    status: int = 200,
) -> Template:
    page_error = None
    try:
        found = await offload(suppressions.page, hub, me.account_id, q, PAGE_SIZE, cursor)
        items: list[SuppressionOut] = found.items
        older = found.next_cursor
    except InputError:
        items, older = [], None
        page_error = "That page link is not valid: start again from the newest opt-outs."
    placed, general = place_errors(errors or [], set(_LABELS))
    return page(
        request,
        "opt_outs.html",
        me=me,
        status=422 if page_error and status == 200 else status,
        items=[(item, SOURCE_WORDS.get(item.source, item.source)) for item in items],
        q=(q or "").strip(),
        older=older,
        paged=cursor is not None,
        page_error=page_error,
        values=raw or {},
        errors=placed,
        general_errors=general,
        labels=_LABELS,
    )


@get(PATH)
async def opt_outs_page(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    q: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
) -> Template:
    return await _opt_outs(request, hub, me, q=q, cursor=cursor)


@post(PATH)
async def add_opt_out(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me]
) -> Template | Redirect:
    form = await request.form()
    raw = {name: str(form.get(name, "")).strip() for name in _LABELS}
    if not raw["address"]:
        required = [FieldError("address", "This is required")]
        return await _opt_outs(request, hub, me, raw=raw, errors=required, status=422)
    try:
        data = SuppressionIn(address=raw["address"], reason=raw["reason"] or None)
        entry, added = await offload(suppressions.add_manual, hub, me.account_id, data)
    except ValidationError as exc:
        errors = people_errors(exc)
        return await _opt_outs(request, hub, me, raw=raw, errors=errors, status=422)
    except InputError as exc:
        errors = exc.fields or [FieldError("address", exc.message)]
        return await _opt_outs(request, hub, me, raw=raw, errors=errors, status=exc.status)
    if added:
        flash(request, f"{entry.address} is on the list: no step sends to it any more.")
    else:
        flash(request, f"{entry.address} was already on the list.")
    return see_other(PATH)


@post(f"{PATH}/remove")
async def remove_opt_out(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me]
) -> Redirect:
    address = str((await request.form()).get("address", ""))
    try:
        removed = await offload(suppressions.remove_manual, hub, me.account_id, address)
    except InputError:
        removed = False
    if removed:
        flash(request, f"{address} is off the list: steps send to it again.")
    else:
        flash(request, f"{address} was not on the list.", "error")
    return see_other(PATH)


HANDLERS = [opt_outs_page, add_opt_out, remove_opt_out]
