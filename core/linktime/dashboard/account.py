"""Signing in and out with an API key; the Account page (timezone, test recipients, plan)."""

from __future__ import annotations

from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from .. import accounts, credits, plans
from ..engine import Hub
from ..errors import FieldError, InputError
from ..offload import offload
from ..testruns import phone_digits, recipient_errors
from . import credit_words
from .app import (
    AnyRequest,
    Me,
    action_title,
    flash,
    page,
    place_errors,
    safe_next,
    see_other,
    usage,
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


# The zones the select offers first; any other IANA name the server knows is accepted too.
COMMON_ZONES = (
    "UTC",
    "America/Los_Angeles",
    "America/Denver",
    "America/Chicago",
    "America/New_York",
    "America/Toronto",
    "America/Mexico_City",
    "America/Bogota",
    "America/Sao_Paulo",
    "America/Argentina/Buenos_Aires",
    "Europe/London",
    "Europe/Dublin",
    "Europe/Lisbon",
    "Europe/Paris",
    "Europe/Berlin",
    "Europe/Madrid",
    "Europe/Rome",
    "Europe/Amsterdam",
    "Europe/Stockholm",
    "Europe/Warsaw",
    "Europe/Athens",
    "Europe/Istanbul",
    "Europe/Kyiv",
    "Europe/Moscow",
    "Africa/Lagos",
    "Africa/Cairo",
    "Africa/Johannesburg",
    "Africa/Nairobi",
    "Asia/Dubai",
    "Asia/Karachi",
    "Asia/Kolkata",
    "Asia/Dhaka",
    "Asia/Bangkok",
    "Asia/Jakarta",
    "Asia/Singapore",
    "Asia/Shanghai",
    "Asia/Hong_Kong",
    "Asia/Manila",
    "Asia/Seoul",
    "Asia/Tokyo",
    "Australia/Perth",
    "Australia/Brisbane",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Pacific/Honolulu",
)
FIELDS = {"timezone", "test_email", "test_phone"}


def _changes(form: dict[str, str]) -> dict[str, str | None]:
    """The form's preferences, blank as None; raises InputError naming each bad field."""
    changes: dict[str, str | None] = {k: form.get(k, "").strip() or None for k in FIELDS}
    if changes["test_phone"] is not None:
        changes["test_phone"] = phone_digits(changes["test_phone"])
    errors = recipient_errors(changes["test_email"], changes["test_phone"])
    zone = changes["timezone"]
    if zone is not None and not accounts.known_timezone(zone):
        errors.insert(
            0, FieldError("timezone", f"“{zone[:64]}” is not a timezone this server knows.")
        )
    if errors:
        raise InputError("the preferences are not valid", errors)
    return changes


async def _account_page(
    request: AnyRequest,
    hub: Hub,
    me: Me,
    values: dict[str, str | None],
    errors: list[FieldError] | None = None,
) -> Template:
    plan = await usage(hub, me)
    sms = await offload(credits.sms_usage, hub, me.account_id)
    placed, general = place_errors(errors or [], FIELDS)
    zones = list(COMMON_ZONES)
    chosen = values["timezone"]
    if chosen and chosen not in zones and accounts.known_timezone(chosen):
        zones.insert(0, chosen)
    return page(
        request,
        "account.html",
        me=me,
        status=422 if errors else 200,
        values=values,
        errors=placed,
        general=[e.message for e in general],
        zones=zones,
        plan=plan,
        sms_credits=credit_words.month_text(sms),
        allowed=sorted(action_title(hub, a) for a in plan.allowed_actions),
        # each with the plans that include it
        not_allowed=sorted(
            (
                action_title(hub, name),
                [p.capitalize() for p in plans.including(hub.settings.plans, action)],
            )
            for name, action in hub.registry.actions.items()
            if name not in plan.allowed_actions
        ),
    )


@get("/account")
async def account_page(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me]
) -> Template:
    stored = await offload(accounts.get_preferences, hub, me.account_id)
    return await _account_page(request, hub, me, stored.model_dump())


@post("/account")
async def save_account(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me]
) -> Template | Redirect:
    posted = await request.form()
    form = {k: str(posted.get(k, "")) for k in FIELDS}
    try:
        changes = _changes(form)
        await offload(accounts.set_preferences, hub, me.account_id, **changes)
    except InputError as exc:
        return await _account_page(request, hub, me, {**form}, exc.fields)
    flash(request, "Saved your account preferences.")
    return see_other("/account")


HANDLERS = [home, login_page, login, logout, account_page, save_account]
