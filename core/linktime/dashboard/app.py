"""What every dashboard page shares: the template engine and its filters, the signed-in user,
flash messages, redirects, error pages and the presentation of triggers and actions."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context
from jinja2.runtime import Context
from litestar import Request, Response
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.template.config import TemplateConfig
from markupsafe import Markup
from pydantic import ValidationError

from .. import integrations, plans, workflows
from ..accounts import known_timezone
from ..engine import Hub
from ..errors import FieldError, InputError, NotFound
from ..offload import offload
from ..workflows import GeneratedSecret
from .session import (
    CSRF_FIELD,
    SignInRequired,
    csrf_token,
    signed_in,
)

HERE = Path(__file__).parent
AnyRequest = Request[Any, Any, Any]
log = logging.getLogger("linktime.dashboard")


TZ_COOKIE = "linktime_tz"  # the browser's zone, set by dashboard.js until one is chosen


def _moment(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


@pass_context
def dt(context: Context, value: Any, style: str = "full") -> Markup | str:
    """A moment in the viewer's timezone, UTC on hover: ``<time datetime=… title=…>``.
    ``style`` "time" shows only the clock ("14:05") for moments today; "day" names the weekday
    ("Tue 2 Dec, 09:00"), the year only when it is not this one."""
    if value is None or value == "":
        return ""
    moment = _moment(value)
    if moment is None:
        return str(value)
    me = context.get("me")
    zone = ZoneInfo(me.timezone if isinstance(me, Me) else "UTC")
    local = moment.astimezone(zone)
    utc = moment.astimezone(UTC)
    today = datetime.now(zone).date()
    if style == "time" and local.date() == today:
        shown = local.strftime("%H:%M")
    elif style == "day":
        year = "" if local.year == today.year else " %Y"
        shown = local.strftime(f"%a %-d %b{year}, %H:%M")
    else:
        shown = local.strftime("%-d %b %Y, %H:%M")
    return Markup('<time datetime="{}" title="{}">{} {}</time>').format(
        utc.isoformat(timespec="seconds").replace("+00:00", "Z"),
        utc.strftime("%Y-%m-%d %H:%M:%S UTC"),
        shown,
        local.tzname() or zone.key,
    )


def pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def field_id(name: str) -> str:
    return name.replace(".", "-").replace("_", "-")


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dt"] = dt
    env.filters["pretty"] = pretty
    env.filters["field_id"] = field_id
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(env))


@dataclass(frozen=True)
class Me:
    account_id: str
    name: str
    plan: str
    timezone: str  # IANA name: the account's choice, else the browser's, else UTC


def flash(request: AnyRequest, text: str, kind: str = "ok", **extra: Any) -> None:
    request.session.setdefault("flash", []).append({"kind": kind, "text": text, **extra})


def page(
    request: AnyRequest,
    name: str,
    *,
    me: Me | None = None,
    status: int = 200,
    **context: Any,
) -> Template:
    session = request.session
    flashes = session.pop("flash", [])
    return Template(
        template_name=name,
        context={
            "csrf_field": CSRF_FIELD,
            "csrf": csrf_token(session),
            "flashes": flashes,
            "me": me,
            "path": request.url.path,
            **context,
        },
        status_code=status,
    )


def see_other(url: str) -> Redirect:
    return Redirect(url, status_code=303)


def safe_next(value: Any, default: str = "/workflows") -> str:
    """Only this site's own paths (no //host, no scheme)."""
    if (
        isinstance(value, str)
        and value.startswith("/")
        and not value.startswith("//")
        and not any(c in value for c in "\\\r\n")
    ):
        return value
    return default


# Offsets are stored in minutes and entered and shown in the largest of these that fits.
OFFSET_UNITS = {"days": 24 * 60, "hours": 60, "minutes": 1}


def split_offset(minutes: int) -> tuple[int, str]:
    """(number, unit) in the largest unit dividing ``minutes`` evenly: 60 → (1, "hours")."""
    for unit, size in OFFSET_UNITS.items():
        if minutes and minutes % size == 0:
            return minutes // size, unit
    return minutes, "minutes"


def offset_text(minutes: int) -> str:
    """The offset in words: "1 hour", "90 minutes", "2 days"."""
    number, unit = split_offset(minutes)
    return f"{number} {unit.removesuffix('s') if number == 1 else unit}"


def trigger_text(hub: Hub, trigger: str, offset: int) -> str:
    t = hub.registry.triggers.get(trigger)
    if t is None:
        return f"{trigger} (not installed)"
    if t.kind != "time":
        return t.title
    where = "before the meeting starts" if t.direction < 0 else "after the meeting ends"
    return f"{t.title} · {offset_text(offset)} {where}"


def action_title(hub: Hub, name: str) -> str:
    action = hub.registry.actions.get(name)
    return action.title if action else f"{name} (not installed)"


def sentence(text: str) -> str:
    """``text`` with its first letter capitalised (the stored notes are lowercase phrases)."""
    return text[:1].upper() + text[1:]


def for_people(message: str) -> str:
    """A validation message as a form shows it: a capitalised sentence without pydantic's
    "Value error, " (it says nothing to a person) and without a regex (a pattern's message
    says what the value must look like in words instead; the field's hint shows an example)."""
    message = message.removeprefix("Value error, ")
    if message.startswith("String should match pattern"):
        message = "This is not in the expected format"
    return sentence(message)


# pydantic's error types in a form's words; {…} from the error's context.
WORDS_BY_TYPE = {
    "missing": "This is required",
    "string_too_long": "Use at most {max_length} characters",
    "string_too_short": "Use at least {min_length} characters",
    "too_long": "Enter at most {max_length}",
    "too_short": "Enter at least {min_length}",
    "greater_than": "Enter more than {gt}",
    "greater_than_equal": "Enter {ge} or more",
    "less_than": "Enter less than {lt}",
    "less_than_equal": "Enter {le} or less",
    "int_parsing": "Enter a whole number",
    "int_type": "Enter a whole number",
    "int_from_float": "Enter a whole number",
    "float_parsing": "Enter a number",
    "float_type": "Enter a number",
    "finite_number": "Enter a number",
    "bool_parsing": "Choose yes or no",
    "string_pattern_mismatch": "This is not in the expected format",
    "literal_error": "Choose one of the options",
    "enum": "Choose one of the options",
    "url_parsing": "Enter a full web address, like https://example.com",
    "url_scheme": "Enter a web address starting with http:// or https://",
    "extra_forbidden": "This is not a setting of this step",
    "string_type": "Enter text",
}


def people_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """A pydantic ValidationError as a form shows it: each error in words chosen by its type
    and context ("Use at most 200 characters", not "String should have at most 200
    characters"); a validator's own message (value_error) as written."""
    found = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"])
        where = f"{prefix}.{path}" if prefix and path else (prefix or path or "workflow")
        ctx = err.get("ctx") or {}
        words = WORDS_BY_TYPE.get(err["type"])
        if err["type"] == "string_too_short" and ctx.get("min_length") == 1:
            words = "This is required"
        elif err["type"] in ("too_long", "too_short"):
            # "Enter at most 50 items", said of what the field holds.
            count = ctx.get("max_length", ctx.get("min_length"))
            words = f"{words} item{'' if count == 1 else 's'}" if words else words
        if words is None:
            message = for_people(str(ctx.get("error", err["msg"])))
        else:
            message = words.format(**ctx)
        found.append(FieldError(where, message))
    return found


def place_errors(
    errors: list[FieldError], known: set[str]
) -> tuple[dict[str, list[str]], list[FieldError]]:
    """Each error under the most specific known field its path falls in; the rest general."""
    placed: dict[str, list[str]] = {}
    general: list[FieldError] = []
    for error in errors:
        error = FieldError(error.field, for_people(error.message))
        parts = error.field.split(".")
        for cut in range(len(parts), 0, -1):
            key = ".".join(parts[:cut])
            if key in known:
                placed.setdefault(key, []).append(error.message)
                break
        else:
            general.append(error)
    return placed, general


def connected_integrations(hub: Hub, account_id: str) -> frozenset[str]:
    """The names of the integrations the account has connected."""
    return frozenset(i.name for i in integrations.list_all(hub, account_id) if i.connected)


async def usage(hub: Hub, me: Me) -> plans.PlanUsage:
    return await offload(workflows.plan_usage, hub, me.account_id)


def toggle_blocked(plan: plans.PlanUsage, enabled: bool) -> str:
    """Why a workflow's toggle or the editor's Enabled switch cannot enable it (the plan's
    active-workflow limit is reached), shown beside it instead of letting it look clickable;
    "" when it can (an enabled workflow's never: switching it off is always allowed)."""
    if enabled or not plan.at_limit:
        return ""
    return (
        f"Your {plan.plan} plan allows {plan.limit} active "
        f"workflow{'' if plan.limit == 1 else 's'} and {plan.active} "
        f"{'is' if plan.active == 1 else 'are'} active: disable one, or upgrade, to enable "
        "this one."
    )


def shown_secrets(generated: list[GeneratedSecret]) -> list[dict[str, str]]:
    """Generated secrets as the flash messages show them once (steps counted from 1)."""
    return [{"step": str(g.step + 1), "field": g.field, "value": g.value} for g in generated]


# -- dependencies and error pages ----------------------------------------------------------------


async def provide_me(request: AnyRequest, hub: NamedDependency[Hub]) -> Me:
    key_id = request.session.get("key_id")
    if not isinstance(key_id, str):
        raise SignInRequired
    found = await offload(signed_in, hub, key_id)
    if found is None:  # the key was revoked: this session is over
        request.session.pop("key_id", None)
        raise SignInRequired
    account_id, name, plan, chosen = found
    browser = unquote(request.cookies.get(TZ_COOKIE, ""))
    zone = chosen or (browser if browser and known_timezone(browser) else "UTC")
    return Me(account_id, name, plan, zone)


def on_sign_in_required(request: AnyRequest, _: SignInRequired) -> Response[Any]:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    if request.method != "GET":
        target = "/workflows"
    return Redirect(f"/login?next={quote(target, safe='/')}", status_code=303)


def error_page(request: AnyRequest, status: int, title: str, detail: str) -> Response[Any]:
    if "session" not in request.scope:
        return Response(f"{title}: {detail}", status_code=status, media_type="text/plain")
    return page(request, "error.html", status=status, code=status, title=title, detail=detail)


def on_not_found(request: AnyRequest, exc: NotFound) -> Response[Any]:
    return error_page(request, 404, "Not found", str(exc))


def on_http(request: AnyRequest, exc: HTTPException) -> Response[Any]:
    titles = {403: "Forbidden", 404: "Not found", 405: "Method not allowed", 413: "Too large"}
    return error_page(request, exc.status_code, titles.get(exc.status_code, "Error"), exc.detail)


def on_input(request: AnyRequest, exc: InputError) -> Response[Any]:
    return error_page(request, exc.status, "Not accepted", str(exc))


def on_unexpected(request: AnyRequest, exc: Exception) -> Response[Any]:
    # A bug, not the user's doing: the traceback goes to the log, not to the page.
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_page(request, 500, "Something went wrong", "It has been logged.")
