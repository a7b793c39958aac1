"""Message templates: Jinja2's sandbox with strict undefined, over a documented set of fields.

Plugins type a settings field as ``TemplateStr``: it is compiled and test-rendered against a
sample booking when the workflow is saved, so an unknown field or a syntax error is refused then,
named with its line, rather than failing a delivery later. Every render runs within the cost
budget of ``template_budget`` (output, steps, characters built, CPU time), whatever the template
and the booking hold.
"""

from __future__ import annotations

import difflib
import functools
import operator
import re
import types
from collections.abc import Callable, Generator, Iterator, Sized
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, cast
from zoneinfo import ZoneInfo

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, pass_context
from jinja2 import tests as jinja_tests
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from markupsafe import Markup
from pydantic import AfterValidator
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from .models import BookingEvent, Person, sample_event
from .template_budget import (
    ITERATING,
    LARGE,
    MAX_OUTPUT,
    MAX_STEPS,
    NS_CHAR,
    SAVE_CPU_SECONDS,
    SAVE_WALL_SECONDS,
    SIZED_FILTERS,
    STRINGIFYING,
    WORDWISE,
    Allowance,
    Budget,
    BudgetCodeGenerator,
    CheckedEscapeFormatter,
    CheckedFormatter,
    CountedBuffer,
    TemplateBudgetError,
    allowed_attribute,
    cheap_comparison,
    check_method,
    check_source,
    current,
    int_bits,
    joined,
    need,
    number_size,
    printf_size,
    shared,
    strftime_size,
    summed,
)

DEFAULT_FORMAT = "%A, %B %-d, %Y %-I:%M %p %Z"


class _Namespace(Namespace):
    """``namespace()``, printed without its contents (its repr shows every value it holds, at
    any depth, without the budget seeing it)."""

    def __repr__(self) -> str:
        return "<namespace>"


def _range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_STEPS:
        raise TemplateBudgetError(f"range() of {len(numbers)} numbers: at most {MAX_STEPS}")
    return numbers


def _repeat(budget: Budget, left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
            need(budget.text_size(seq) * max(times, 0), "`*` repetition")
    if isinstance(left, int) and isinstance(right, int):
        int_bits(left.bit_length() + right.bit_length(), "`*`")


class _Env(ImmutableSandboxedEnvironment):
    """The sandbox (lists and dicts read-only), with the render budget of ``template_budget``
    hooked into every operator, call, filter, loop, ``~`` and captured block."""

    code_generator_class = BudgetCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=autoescape, finalize=_finalize)
        self.filters["localtime"] = localtime
        sized: dict[str, Callable[..., Any]] = {
            **SIZED_FILTERS,
            "join": lambda budget, value, d="", attribute=None: joined(
                budget, self._getter(attribute), value, d
            ),
            "sum": lambda budget, value, attribute=None, start=0: summed(
                budget, self._getter(attribute), value, start
            ),
        }
        self.filters = {
            name: _guarded(name, f, sized.get(name)) for name, f in self.filters.items()
        }
        # Dates (and amounts) in tojson as the event's JSON has them: "2026-12-01T15:00:00Z".
        self.policies["json.dumps_kwargs"] = {"sort_keys": True, "default": to_jsonable_python}
        self.tests = {
            name: _compared_test(cast(Callable[..., Any], test))
            for name, test in self.tests.items()
        }
        del self.globals["lipsum"]  # placeholder text sized by its arguments: no use here
        self.globals.update(range=_range, namespace=_Namespace)

    def _getter(self, attribute: str | int | None) -> Callable[[Any], Any] | None:
        return None if attribute is None else make_attrgetter(self, attribute)

    # Called by the code of compiled templates (see BudgetCodeGenerator).
    def budget_tick(self) -> bool:
        current.get().tick()
        return True

    def budget_buffer(self) -> CountedBuffer:
        return CountedBuffer(current.get())

    def budget_operand(self, value: Any) -> Any:
        current.get().text_size(value)
        return value

    def budget_built(self, value: Any) -> Any:
        return current.get().built(value)

    def budget_compare(self, left: Any, op: str, right: Any) -> Any:
        if not cheap_comparison(left, right):
            current.get().compare(op, left, right)
        return _COMPARISONS[op](left, right)

    def budget_chain(self, left: Any, *operands: Any) -> Any:
        # `left op1 right1 op2 right2…`, the rights unevaluated (see BudgetCodeGenerator).
        result: Any = True
        for i in range(0, len(operands), 2):
            right = operands[i + 1]()
            result = self.budget_compare(left, operands[i], right)
            if not result:
                return result
            left = right
        return result

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        budget = current.get()
        if operator_ == "%" and isinstance(left, str | bytes):
            need(printf_size(budget, left, right), "`%` formatting")
        elif operator_ == "+" and isinstance(left, str | list | tuple) and isinstance(right, Sized):
            need(len(left) + len(right), "`+`")
        elif operator_ == "*":
            _repeat(budget, left, right)
        elif operator_ == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            int_bits(left.bit_length() * right, "`**`")
        result = self.binop_table[operator_](left, right)
        if operator_ == "**" and isinstance(result, Decimal):
            number_size(result)  # its precision is bounded, its exponent is not: 1E+169897
        return budget.built(result)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = current.get()
        budget.tick()
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str) and len(owner) > LARGE:
            budget.clock()
        args = check_method(budget, obj, args, kwargs)
        return budget.built(super().call(context, obj, *args, **kwargs))

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return allowed_attribute(obj, attr) and super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # The sandbox's wrapper, with a formatter that sizes each field before formatting it.
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or (
            value.__name__ not in ("format", "format_map")
        ):
            return None
        template = value.__self__
        if not isinstance(template, str):
            return None
        formatter = (
            CheckedEscapeFormatter(self, escape=template.escape)
            if isinstance(template, Markup)
            else CheckedFormatter(self)
        )
        by_name = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            if by_name:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                return type(template)(formatter.vformat(template, (), args[0]))
            return type(template)(formatter.vformat(template, args, kwargs))

        return checked


# Jinja's comparison operators, by the names its parser gives them.
_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lteq": operator.le,
    "gt": operator.gt,
    "gteq": operator.ge,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}
# The tests that compare (`is eq`, `is in`, and through `select('in', …)` and the like).
_COMPARING_TESTS = {
    operator.eq: "eq",
    operator.ne: "ne",
    operator.lt: "lt",
    operator.le: "lteq",
    operator.gt: "gt",
    operator.ge: "gteq",
    jinja_tests.test_in: "in",
}


def _compared_test(test: Callable[..., Any]) -> Callable[..., Any]:
    """``test`` charged as the comparison it makes, when it makes one."""
    op = _COMPARING_TESTS.get(test)
    if op is None:
        return test

    def compared(value: Any, other: Any) -> Any:
        current.get().compare(op, value, other)
        return test(value, other)

    return compared


def _guarded(
    name: str, filter_: Callable[..., Any], sized: Callable[..., Any] | None
) -> Callable[..., Any]:
    """``filter_`` under the budget: a step, its input charged and sized, its result counted."""
    lead = 0 if getattr(filter_, "jinja_pass_arg", None) is None else 1  # context/environment
    iterates, stringifies, wordwise = name in ITERATING, name in STRINGIFYING, name in WORDWISE

    @functools.wraps(filter_)  # keeps jinja_pass_arg
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = current.get()
        budget.tick()
        if len(args) > lead:
            value, rest = args[lead], args[lead + 1 :]
            if isinstance(value, str):
                budget.charge(len(value) * NS_CHAR)  # any filter goes through its text once
                if wordwise:
                    budget.tick(len(value.split()))
                if len(value) > LARGE:
                    budget.clock()
            if iterates:
                value = budget.counted(value)
            if stringifies:
                for arg in (value, *rest, *kwargs.values()):
                    budget.text_size(arg)
            if sized is not None:
                value = sized(budget, value, *rest, **kwargs)
            if value is not args[lead]:
                args = (*args[:lead], value, *rest)
        return budget.built(filter_(*args, **kwargs))

    return guarded


@pass_context
def localtime(
    context: Context, value: datetime | str | None, tz: str | None = None, fmt: str | None = None
) -> str:
    """``{{ booking.start | localtime }}`` in the invitee's timezone, or
    ``localtime(host.timezone)``, ``localtime("Europe/Paris", "%H:%M")``."""
    if value is None or value == "":
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    zone = tz or (context.get("invitee") or {}).get("timezone") or "UTC"
    strftime_size(fmt or DEFAULT_FORMAT)  # a width in the format would print that many
    return moment.astimezone(ZoneInfo(zone)).strftime(fmt or DEFAULT_FORMAT)


def _finalize(value: Any) -> Any:
    if value is None:
        return ""
    if not isinstance(value, str | int | float):
        current.get().text_size(value)  # a list or dict is sized before it becomes text
    return value


_PLAIN = _Env(autoescape=False)
_HTML = _Env(autoescape=True)


@functools.lru_cache(maxsize=256)
def _compiled(source: str, html: bool) -> Template:
    # Compiled once per process, not at every send; rendering a Template is thread-safe.
    environment = _HTML if html else _PLAIN
    check_source(source, environment.lexer.tokenize(source))
    return environment.from_string(source)


def _stream(template: Template, context: dict[str, Any]) -> str:
    """Render, counting the output as it is produced: the render stops at the statement that
    would take it past MAX_OUTPUT (thrown in there, so the error names its line)."""
    parts: list[str] = []
    size = 0
    stream = cast(Generator[str, None, None], template.generate(context))
    budget = current.get()
    for part in stream:
        size += len(part)
        try:
            if size > MAX_OUTPUT:
                raise TemplateBudgetError(f"renders to more than {MAX_OUTPUT} characters")
            budget.clock()  # a template without loops or calls is timed too
        except TemplateBudgetError as exc:
            stream.throw(exc)
        parts.append(part)
    return "".join(parts)


def _person(p: Person | None) -> dict[str, Any]:
    if p is None:
        return {
            "name": "",
            "first_name": "",
            "last_name": "",
            "email": None,
            "phone": None,
            "timezone": "UTC",
        }
    first, _, last = p.name.partition(" ")
    return {**p.model_dump(), "first_name": first, "last_name": last}


def variables(event: BookingEvent) -> dict[str, Any]:
    """Everything a template may use (documented in the README's table)."""
    b = event.booking
    booking = b.model_dump()
    invitee = _person(b.invitee or (b.invitees[0] if b.invitees else None))
    host = _person(b.host or (b.hosts[0] if b.hosts else None))
    tz = ZoneInfo(invitee["timezone"])
    start, end = b.start.astimezone(tz), b.end.astimezone(tz)
    payment = (
        b.payment.model_dump()
        if b.payment
        else {"amount": None, "currency": None, "reference": None}
    )
    event_type = (
        b.event_type.model_dump() if b.event_type else {"id": None, "slug": None, "title": None}
    )
    return {
        "event": {"id": event.id, "type": event.type, "occurred_at": event.occurred_at},
        "booking": booking,
        "invitee": invitee,
        "host": host,
        "event_type": event_type,
        "payment": payment,
        # Cal.com's flat names, dates in the attendee's timezone
        "event_name": b.title or event_type["title"] or "",
        "event_date": start.strftime("%A, %B %-d, %Y"),
        "event_time": start.strftime("%-I:%M %p"),
        "event_end_time": end.strftime("%-I:%M %p"),
        "timezone": invitee["timezone"],
        "location": b.location,
        "organizer_name": host["name"],
        "attendee_name": invitee["name"],
        "attendee_first_name": invitee["first_name"],
        "attendee_last_name": invitee["last_name"],
        "attendee_email": invitee["email"],
        "additional_notes": b.notes,
        "meeting_url": b.meeting_url,
        "cancel_url": b.cancel_url,
        "reschedule_url": b.reschedule_url,
        "cancellation_reason": b.cancellation_reason,
        "reschedule_reason": b.reschedule_reason,
        "payment_amount": f"{payment['amount']} {payment['currency']}" if b.payment else "",
        "custom": Answers(b.custom_fields),
    }


class Answers(dict[str, Any]):
    """The booking form's answers (``booking.custom_fields``) as ``custom.<key>``: a question
    this booking left unanswered renders as nothing, as Cal.com's answer variables do, so a
    template naming one is valid for every booking."""

    def __missing__(self, key: str) -> str:
        return ""


def catalogue(event: BookingEvent) -> list[tuple[str, Any]]:
    """Every field a template may name, as written in one (``invitee.name``), with its value
    for ``event``: the top-level names and, for the objects among them, their fields."""
    found: list[tuple[str, Any]] = []
    for name, value in variables(event).items():
        if isinstance(value, dict):
            found += [
                (f"{name}.{k}", v) for k, v in value.items() if not isinstance(v, dict | list)
            ]
        else:
            found.append((name, value))
    return found


_NAMES = [name for name, _ in catalogue(sample_event())]
_TOP_LEVEL = sorted({name.partition(".")[0] for name in _NAMES})
_FIELDS = sorted({name.partition(".")[2] for name in _NAMES if "." in name})


def _suggest(field: str, attribute: bool) -> str:
    """The hint for a misspelt field, e.g. ": did you mean 'attendee_name'?", when a known one
    is close (an attribute among the objects' fields, else among the top-level names)."""
    known = _FIELDS if attribute else _TOP_LEVEL
    # A field of another object ('amount' of the invitee) is no typo to correct.
    close = [] if field in known else difflib.get_close_matches(field, known, n=1)
    return f": did you mean '{close[0]}'?" if close else ""


_UNDEFINED_RE = re.compile(r"has no attribute '([^']+)'|'([^']+)' is undefined")


class TemplateError(ValueError):
    """A template that cannot render: syntax error, unknown field, or sandbox violation.
    (A render stopped by its budget raises ``TemplateBudgetError``, which is not one of these.)"""


def _line_of(exc: BaseException) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _located(exc: BaseException, message: str) -> str:
    where = _line_of(exc)
    return f"line {where}: {message}" if where else message


def render(
    source: str, event: BookingEvent, *, html: bool = False, budget: Budget | None = None
) -> str:
    """Render ``source`` for ``event`` within the budget of ``template_budget`` (``budget``: the
    counters to charge, fresh by default): raises ``TemplateError``, or ``TemplateBudgetError``
    when the render is stopped."""
    try:
        template = _compiled(source, html)
        context = variables(event)
        token = current.set(budget or Budget())
        try:
            return _stream(template, context)
        finally:
            current.reset(token)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: syntax error: {exc.message}") from None
    except UndefinedError as exc:
        found = _UNDEFINED_RE.search(exc.message or "")
        field = next((g for g in found.groups() if g), "?") if found else "?"
        attribute = bool(found and found.group(1))
        message = f"unknown field '{field}'{_suggest(field, attribute)}"
        raise TemplateError(_located(exc, message)) from None
    except TemplateBudgetError as exc:
        raise TemplateBudgetError(_located(exc, f"template budget exceeded: {exc}")) from None
    except RecursionError as exc:  # macros or recursive loops nested as deep as Python goes
        raise TemplateBudgetError(
            _located(exc, "template budget exceeded: calls nested too deeply")
        ) from None
    except SecurityError as exc:
        raise TemplateError(f"not allowed in a template: {exc}") from None
    except Exception as exc:  # filters given bad input, and the like
        raise TemplateError(_located(exc, f"{type(exc).__name__}: {exc}")) from None


_SAMPLES = [sample_event(t) for t in ("booking.created", "booking.cancelled", "payment.received")]


@contextmanager
def checks_of_one_save() -> Iterator[None]:
    """Every template check made within (those of one workflow save) shares one allowance of
    ``SAVE_CPU_SECONDS`` and ``SAVE_WALL_SECONDS``, however many templates and samples: a save
    full of templates that each run to the budget costs that, not their sum. Usable as a
    decorator."""
    token = shared.set(Allowance(SAVE_CPU_SECONDS, SAVE_WALL_SECONDS))
    try:
        yield
    finally:
        shared.reset(token)


def check_template(source: str) -> str:
    """Refuse a template that would not render for a booking (used when a workflow is saved)."""
    for sample in _SAMPLES:
        render(source, sample)
    return source


TemplateStr = Annotated[str, AfterValidator(check_template)]


def is_template(field: FieldInfo) -> bool:
    """Whether a settings field is typed ``TemplateStr``."""
    return any(getattr(m, "func", None) is check_template for m in field.metadata)
