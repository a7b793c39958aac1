"""The cost budget of one template render: whatever the template and the booking hold, a render
stops (``TemplateBudgetError``) before it costs more than these limits.

- ``MAX_OUTPUT`` characters of output, counted while the template streams it; no single value
  a template builds (a string, a captured block, a list) may be larger either.
- ``MAX_STEPS`` steps: every loop iteration (nested and recursive loops, and items a loop's
  ``if`` skips), every call (macros, methods), every filter applied, every item a filter iterates
  over, every item of a list or dict turned into text.
- ``MAX_CHARS`` characters built in all (filter and method results, ``~`` and ``+``, captured
  blocks), so a loop cannot pile up memory the output never shows.
- Numeric arguments that size a result are checked *before* it is built: ``center``,
  ``indent``, ``wordwrap``, ``replace``, ``*`` repetition, ``**`` and ``*`` on integers
  (``MAX_INT_BITS``), ``batch``, ``slice``, ``join``, ``sum``, ``tojson`` indents, the str
  methods ``center``/``ljust``/``rjust``/``zfill``/``expandtabs``/``replace``/``join``/
  ``translate``; ``range`` may not exceed ``MAX_STEPS``.
- Comparisons (``==``, ``<``…, ``in``, ``not in``, the tests ``eq``/``in``… and the
  filters that compare: ``select``, ``sort``, ``unique``, ``min``, ``max``…) are charged
  before they run for the items and characters they go through (``Budget.compare``); ``**``
  may not give a Decimal of more digits than an integer may have.
- Formats are read by parsers as strict as Python's and each field sized before it is
  formatted: ``str.format`` (``CheckedFormatter``, nested fields substituted first), ``%`` and
  the ``format`` filter (``printf_size``), ``strftime`` formats (``strftime_size``). A format
  they cannot read is refused.
- Only the attributes listed in ``ATTRIBUTES`` of strings, bytes, lists, dicts, dates and
  numbers are reachable, and codecs are limited to ``CODECS``.
- ``MAX_CPU_SECONDS`` of the rendering thread's CPU time and ``MAX_WALL_SECONDS`` of
  wall-clock time, checked at those counters. A single filter or method call is charged, before
  it runs, for the work it will do (``Budget.charge``: its measured cost per character, word or
  line, ``COST_MARGIN`` times), and refused when that does not fit in the CPU time left.
- Compiling: a template longer than ``MAX_SOURCE`` characters or ``MAX_TOKENS`` tokens is
  refused before it is compiled (``check_source``).
- ``SAVE_CPU_SECONDS``/``SAVE_WALL_SECONDS`` shared by every check of one workflow save
  (``Allowance``, set by ``templating.checks_of_one_save``).

Jinja2's sandbox has no hook for loops, comparisons, ``~`` or captured blocks, so a code
generator adds them: each loop iteration calls ``environment.budget_tick()``, each comparison
``environment.budget_compare``, each ``~`` operand and result passes
``environment.budget_operand``/``budget_built``, and each buffer is a ``CountedBuffer``. The
clocks are also read at every part of the output, so a template without loops is timed too.
"""

from __future__ import annotations

import codecs
import gc
import itertools
import re
import threading
import time
from collections.abc import (
    Callable,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    Sequence,
    Sized,
    ValuesView,
)
from contextvars import ContextVar
from datetime import date, datetime, timedelta
from datetime import time as time_of_day
from decimal import Decimal
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter

MAX_OUTPUT = 100_000  # characters a template renders to; also the largest value it may build
MAX_CHARS = 1_000_000  # characters a render may build in all
MAX_STEPS = 10_000  # loop iterations, calls, filters and items iterated or turned into text
MAX_CPU_SECONDS = 0.04  # the rendering thread's CPU time (rendering does no I/O)
# Wall-clock time, generous: a loaded machine must not stop an ordinary render.
MAX_WALL_SECONDS = 1.0
# What all the template checks of one workflow save may take together (SAVE_* below).
SAVE_CPU_SECONDS = 0.1
SAVE_WALL_SECONDS = 2.0
MAX_INT_BITS = 4096  # integers a template computes with `*` and `**`
MAX_JSON_INDENT = 16
# Compiling costs ~15-30 µs and ~2 KB per token, before any render budget applies: a template
# is refused above these (the longest built-in one has 41 tokens).
MAX_SOURCE = 50_000  # characters of template source
MAX_TOKENS = 1_500  # names, literals, operators and runs of text between tags

_CLOCK_EVERY = 16  # steps between CPU-time checks (reading the thread clock costs ~0.3 µs)
# A step stands for this much CPU time: a call charged N steps of work must have N of these left.
STEP_SECONDS = MAX_CPU_SECONDS / MAX_STEPS
_STEP_NS = STEP_SECONDS * 1e9
# Work charged in advance is its cost measured on a developer's machine (the _NS_* constants),
# doubled for slower ones.
COST_MARGIN = 2
NS_CHAR = 1.0  # C code going through or writing one character (find, upper, encode, copy)
_NS_OBJECT = 20.0  # C code making one object (a piece of a split, a character of a date)
_NS_LOOKUP = 50.0  # C code looking one character up in a dict (translate)
_NS_PAIR = 0.05  # strip(chars): each character of the string against each of `chars`
_NS_COMPARED = 100.0  # one comparison (or hash) of two numbers, strings or list items
_NS_DECIMAL_COMPARED = 2_500.0  # one of a Decimal (against a float: made exact first)
LARGE = 1024  # characters: a filter or method given a longer string checks the clock first


_collections = threading.local()


def _on_collection(phase: str, _info: dict[str, int]) -> None:
    if phase == "start":
        _collections.started = time.thread_time()
    elif (started := getattr(_collections, "started", None)) is not None:
        _collections.spent = getattr(_collections, "spent", 0.0) + time.thread_time() - started
        _collections.started = None


gc.callbacks.append(_on_collection)


def cpu_time() -> float:
    """This thread's CPU time, less what the garbage collector spent in it: a collection of
    the whole process that happens to fall in a render is not the template's cost, and must
    not fail a legitimate message."""
    return time.thread_time() - getattr(_collections, "spent", 0.0)


class TemplateBudgetError(ValueError):
    """A render stopped for exceeding its budget. Deliberately not a ``TemplateError``: plugins
    catch those as ``template_error``, while this one reaches the engine, which fails the step
    permanently with ``template_budget`` whatever the plugin (the same template and booking
    would stop again). Saving a workflow refuses it like any invalid value (a 422)."""


class Allowance:
    """CPU and wall-clock time shared by several renders (every check of one workflow save):
    each render's deadlines are the earlier of its own and these."""

    __slots__ = ("deadline", "wall_deadline")

    def __init__(self, cpu_seconds: float, wall_seconds: float) -> None:
        self.deadline = cpu_time() + cpu_seconds
        self.wall_deadline = time.monotonic() + wall_seconds


shared: ContextVar[Allowance | None] = ContextVar("linktime_template_allowance", default=None)


class Budget:
    """The counters of one render."""

    __slots__ = ("chars", "deadline", "steps", "wall_deadline")

    def __init__(self) -> None:
        self.steps = 0
        self.chars = 0
        self.deadline = cpu_time() + MAX_CPU_SECONDS
        self.wall_deadline = time.monotonic() + MAX_WALL_SECONDS
        if (allowance := shared.get()) is not None:
            self.deadline = min(self.deadline, allowance.deadline)
            self.wall_deadline = min(self.wall_deadline, allowance.wall_deadline)

    def tick(self, count: int = 1) -> None:
        self.steps += count
        if self.steps > MAX_STEPS:
            raise TemplateBudgetError(
                f"more than {MAX_STEPS} steps (loop iterations, calls, filters and the items "
                "they go through)"
            )
        if count > 1:  # many at once: the work they stand for is ahead, and must fit
            self.clock(ahead=count * STEP_SECONDS)
        elif not self.steps % _CLOCK_EVERY:
            self.clock()

    def charge(self, nanoseconds: float) -> None:
        """Charge work a single call is about to do (in steps of ``STEP_SECONDS``), before it
        is done: refused when it would not fit in what is left of the budget."""
        steps = int(nanoseconds * COST_MARGIN // _STEP_NS)
        if steps:
            self.tick(steps)

    def clock(self, ahead: float = 0.0) -> None:
        if cpu_time() + ahead > self.deadline:
            raise TemplateBudgetError(f"more than {int(MAX_CPU_SECONDS * 1000)} ms of CPU time")
        if time.monotonic() > self.wall_deadline:
            raise TemplateBudgetError(f"more than {MAX_WALL_SECONDS:g} s of wall-clock time")

    def built(self, value: Any) -> Any:
        """Count a string the template built (refusing it if too large), size a list or dict
        it built, and pass it on."""
        if isinstance(value, str | bytes):
            size = len(value)
            if size > MAX_OUTPUT:
                raise TemplateBudgetError(f"builds a value of more than {MAX_OUTPUT} characters")
            self.chars += size
            if self.chars > MAX_CHARS:
                raise TemplateBudgetError(f"builds more than {MAX_CHARS} characters in all")
        elif not isinstance(value, int | float) and isinstance(value, CONTAINERS):
            # Lists holding the same list twice, nested, grow exponentially in content (what
            # ==, hashing, sorting and str() go through) and not in memory: sized when built.
            self.text_size(value)
        return value

    def text_size(self, value: Any) -> int:
        """An estimate of ``len(str(value))`` reached without building it: lists and dicts are
        walked, a step per item (shared sub-lists make ``str()`` exponential, the walk not),
        and refused when larger than ``MAX_OUTPUT``."""
        if isinstance(value, str | bytes):
            return len(value)
        if isinstance(value, int):
            return number_size(value)
        if isinstance(value, Decimal):  # str() writes a large exponent as one
            return len(value.as_tuple().digits) + _SCALAR
        if not isinstance(value, CONTAINERS):
            return _SCALAR
        total = 0
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str | bytes):
                total += len(item) + 4  # quotes and separator
            elif isinstance(item, Mapping):
                self.tick(len(item))
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, CONTAINERS):
                self.tick(len(item))
                stack.extend(item)
            else:
                total += _SCALAR
            if total > MAX_OUTPUT:
                raise TemplateBudgetError(
                    f"turns a value of more than {MAX_OUTPUT} characters into text"
                )
        return total

    def compare(self, op: str, left: Any, right: Any) -> None:
        """Charge a comparison (``==``, ``<``, ``in``…) for the work it will do, before it runs:
        ``x in items`` compares ``x`` with each item, a list or dict is gone through item by
        item at any depth, a string character by character."""
        if op in ("in", "notin"):
            if isinstance(right, str | bytes):
                size = len(left) if isinstance(left, str | bytes) else 0
                self.charge((len(right) + size) * NS_CHAR)
            elif isinstance(right, range) and isinstance(left, int):
                self.tick()  # arithmetic, whatever the range
            elif isinstance(right, Mapping | set | frozenset | KeysView):
                self.charge(compared_cost(left))  # hashed once
            else:
                times = len(right) if isinstance(right, Sized) else 1
                self.charge(compared_cost(left) * times + compared_cost(right))
            return
        self.charge(compared_cost(left) + compared_cost(right))

    def counted(self, items: Any) -> Any:
        """``items`` as a filter will iterate it: a sized one charged a step per item up front,
        any other iterable charged as it is consumed."""
        if isinstance(items, Sized):
            self.tick(len(items))
            return items
        if isinstance(items, Iterable):
            return self._consumed(items)
        return items

    def _consumed(self, items: Iterable[Any]) -> Iterator[Any]:
        for item in items:
            self.tick()
            yield item


# Values a comparison goes through in one go (Decimal is not one: against a float it is slow).
_SCALARS = frozenset({int, float, bool, type(None), str, datetime, date, time_of_day})


def cheap_comparison(left: Any, right: Any) -> bool:
    """Whether comparing ``left`` and ``right`` (any operator) costs under a step: numbers,
    dates and strings up to ``LARGE`` characters, the common case, not charged."""
    return (
        type(left) in _SCALARS
        and type(right) in _SCALARS
        and (type(left) is not str or len(left) <= LARGE)
        and (type(right) is not str or len(right) <= LARGE)
    )


# What str() shows item by item (dicts through Mapping).
CONTAINERS = (list, tuple, set, frozenset, KeysView, ValuesView, Mapping)


def compared_cost(value: Any) -> float:
    """What comparing ``value`` with another (or hashing it) may cost, in nanoseconds: each
    item at any depth, a Decimal's the most (against a float it is made exact), a string's
    characters. The walk stops past ``MAX_STEPS`` items, more than a budget can pay for."""
    if isinstance(value, int | float) or value is None:  # the common case, first
        return _NS_COMPARED
    cost = 0.0
    stack = [value]
    walked = 0
    while stack and walked <= MAX_STEPS:
        item = stack.pop()
        walked += 1
        if isinstance(item, str | bytes):
            cost += _NS_COMPARED + len(item) * NS_CHAR
        elif isinstance(item, Decimal):
            cost += _NS_DECIMAL_COMPARED
        elif isinstance(item, Mapping):
            cost += _NS_COMPARED
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, CONTAINERS):
            cost += _NS_COMPARED
            stack.extend(item)
        else:
            cost += _NS_COMPARED
    if stack:
        cost += _STEP_NS * MAX_STEPS  # not walked to the end: more than a budget holds
    return cost


current: ContextVar[Budget] = ContextVar("linktime_template_budget")


def check_source(source: str, tokens: Iterable[object]) -> None:
    """Refuse a template whose compiling would cost more than a render may: longer than
    ``MAX_SOURCE`` characters or lexed (``tokens``, read lazily) into more than
    ``MAX_TOKENS`` tokens."""
    if len(source) > MAX_SOURCE:
        raise TemplateBudgetError(f"a template of more than {MAX_SOURCE} characters")
    if sum(1 for _ in itertools.islice(tokens, MAX_TOKENS + 1)) > MAX_TOKENS:
        raise TemplateBudgetError(
            f"a template of more than {MAX_TOKENS} tokens (names, literals, operators and "
            "runs of text between tags)"
        )


def need(size: int, what: str) -> None:
    """Refuse building ``what`` when it would be larger than a value may be."""
    if size > MAX_OUTPUT:
        raise TemplateBudgetError(f"{what} would build more than {MAX_OUTPUT} characters")


def int_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateBudgetError(
            f"{what} would compute an integer of more than {MAX_INT_BITS} bits"
        )


# --- formatting -------------------------------------------------------------------------------
# Every width and precision is read by a parser as strict as Python's own and checked before
# anything is built: a spec the parser cannot read is refused, not counted as nothing.

_MAX_DIGITS = 7  # a width or precision longer than this is over MAX_OUTPUT anyway
_FORMAT_SPEC = re.compile(
    r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>[0-9]*)[,_]?(?:\.(?P<precision>[0-9]+))?"
    r"(?P<type>[bcdeEfFgGnosxX%]?)",
    re.DOTALL,  # the fill may be any character, a newline too
)
_PRINTF_FLAGS = "-+ #0"
_PRINTF_CONVERSIONS = "diouxXeEfFgGcrsa%"
# strftime directives (with glibc's one-character flags and E/O modifiers, never a width)
_STRFTIME = re.compile(r"%[-_0^#]?[EO]?[aAbBcCdDeFgGhHIjklmMnpPrRsStTuUVwWxXyYzZf%+]")
_STRFTIME_DIRECTIVE = 40  # characters a directive may print (%c, %Z, %+), generously
_SCALAR = 24  # the text of a float or a date, generously
_FLOAT = 330  # the longest float without an exponent: 1e308 printed with "f"
_DECIMAL_DIGITS = MAX_INT_BITS * 3 // 10  # the digits of the largest integer allowed


class Unreadable(TemplateBudgetError):
    """A format the budget cannot size: refused rather than guessed."""


def _count(digits: str, what: str) -> int:
    if len(digits) > _MAX_DIGITS:
        raise TemplateBudgetError(
            f"{what} {digits[:12]}… would build more than {MAX_OUTPUT} characters"
        )
    return int(digits) if digits else 0


def number_size(value: Any) -> int:
    """Characters a number may print as, in any base or grouping (binary being the longest)."""
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return abs(value).bit_length() * 5 // 4 + 4  # base 2 with `_` every 4 digits
    if isinstance(value, Decimal):
        # A booking's amount may be 1E+999999: its integer would take seconds to compute.
        if value.is_finite() and value.adjusted() > _DECIMAL_DIGITS:
            raise TemplateBudgetError(f"a number of more than {_DECIMAL_DIGITS} digits")
        return (len(value.as_tuple().digits) + abs(value.adjusted())) * 4 // 3 + 8
    return _FLOAT * 4 // 3


def strftime_size(fmt: str) -> int:
    """An upper bound of ``len(moment.strftime(fmt))``; a format holding anything but plain
    directives (a width such as ``%099999999d``, a lone ``%``) is refused."""
    directives = len(_STRFTIME.findall(fmt))
    if fmt.count("%") != directives + fmt.count("%%"):
        raise Unreadable(f"a date format it cannot read: {fmt[:40]!r}")
    size = len(fmt) + directives * _STRFTIME_DIRECTIVE
    need(size, "a date format")
    return size


def field_size(budget: Budget, value: Any, spec: str) -> int:
    """An upper bound of ``len(format(value, spec))``, reached without formatting."""
    if isinstance(value, datetime | date | time_of_day):
        return strftime_size(spec) if spec else _SCALAR
    if not spec:
        return budget.text_size(value)
    found = _FORMAT_SPEC.fullmatch(spec)
    if found is None:
        raise Unreadable(f"a format spec it cannot read: {spec[:40]!r}")
    width = _count(found["width"], "a width of")
    precision = _count(found["precision"] or "", "a precision of")
    if isinstance(value, str):
        content = min(len(value), precision) if found["precision"] else len(value)
    elif isinstance(value, int | float | Decimal):
        content = number_size(value) + precision + 2
    elif getattr(type(value), "__format__", None) is object.__format__:
        content = 0  # format() refuses a spec for these
    else:
        raise Unreadable(f"a format spec for a {type(value).__name__}")
    size = max(width, content)
    need(size, "format()")
    return size


def _printf_number(template: str, i: int) -> tuple[str, int]:
    if template.startswith("*", i):
        return "*", i + 1
    j = i
    while j < len(template) and "0" <= template[j] <= "9":
        j += 1
    return template[i:j], j


def printf_specs(template: str) -> Iterator[tuple[str | None, str, str | None, str]]:
    """``(key, width, precision, conversion)`` of each ``%`` conversion, read as Python reads
    them (a key's parentheses nest); refused when Python would not read it."""
    i = 0
    while (i := template.find("%", i)) != -1:
        i += 1
        key = None
        if template.startswith("(", i):
            depth, start = 1, i + 1
            i += 1
            while i < len(template) and depth:
                depth += {"(": 1, ")": -1}.get(template[i], 0)
                i += 1
            if depth:
                raise Unreadable("a `%` format with an unclosed key")
            key = template[start : i - 1]
        while i < len(template) and template[i] in _PRINTF_FLAGS:
            i += 1
        width, i = _printf_number(template, i)
        precision = None
        if template.startswith(".", i):
            precision, i = _printf_number(template, i + 1)
        if i < len(template) and template[i] in "hlL":
            i += 1
        if i >= len(template) or template[i] not in _PRINTF_CONVERSIONS:
            raise Unreadable("a `%` format it cannot read")
        yield key, width, precision, template[i]
        i += 1


def printf_size(budget: Budget, template: str | bytes, args: Any) -> int:
    """An upper bound of ``len(template % args)``: each conversion's width, precision (``*``
    ones taken from ``args``) and value, sized before anything is formatted."""
    if isinstance(template, bytes):
        template = template.decode("latin-1")
    mapping = args if isinstance(args, Mapping) else None
    positional = iter(args if isinstance(args, tuple) else (args,))

    def star_or(number: str, what: str) -> int:
        if number == "*":
            value = next(positional, 0)
            return abs(value) if isinstance(value, int) else 0  # else Python refuses it
        return _count(number, what)

    total = len(template)
    for key, width_spec, precision_spec, conversion in printf_specs(template):
        width = star_or(width_spec, "a width of")
        precision = None if precision_spec is None else star_or(precision_spec, "a precision of")
        if conversion == "%":
            total += max(width, 1)
            continue
        value = (mapping or {}).get(key) if key is not None else next(positional, None)
        if conversion in "sra":
            content = budget.text_size(value) * (1 if conversion == "s" else 10) + 2
            content = content if precision is None else min(content, precision)
        elif conversion == "c":
            content = 1
        else:
            content = number_size(value) + (precision or 0) + 2
        total += max(width, content)
        need(total, "`%` formatting")
    return total


class CheckedFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox, each field sized *before* it is formatted, with its
    nested fields (``{:{}}``) already substituted: Python's own parser reads the template."""

    def vformat(self, format_string: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        self._size = len(format_string)
        need(self._size, "format()")
        return super().vformat(format_string, args, kwargs)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:  # a repr escapes each character in up to 10
            size = current.get().text_size(value) * (1 if conversion == "s" else 10)
            need(size, f"!{conversion}")
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        budget = current.get()
        budget.tick()
        self._size += field_size(budget, value, format_spec) * self._grows
        need(self._size, "format()")
        return super().format_field(value, format_spec)

    _grows = 1


class CheckedEscapeFormatter(CheckedFormatter, SandboxedEscapeFormatter):
    _grows = 6  # escaping turns `"` into `&#34;`


# --- filters -----------------------------------------------------------------------------------

# Filters that walk their input item by item: a step per item.
ITERATING = frozenset({
    "batch", "dictsort", "groupby", "items", "join", "list", "map", "max", "min", "reject",
    "rejectattr", "select", "selectattr", "slice", "sort", "sum", "unique",
})  # fmt: skip
# Filters that go through their text word by word in Python: a step per word.
WORDWISE = frozenset({"pprint"})
# Filters that turn their input (and arguments) into text: lists and dicts are walked first.
STRINGIFYING = frozenset({
    "capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower",
    "pprint", "replace", "safe", "string", "striptags", "title", "tojson", "trim",
    "truncate", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr",
})  # fmt: skip

# The Python work of filters, per unit, measured (bench/templates.py) and rounded up.
_NS_WRAPPED = 2_500.0  # wordwrap: each word and each line it writes (textwrap, in Python)
_NS_URLIZED = 3_500.0  # urlize: each word (regular expressions, in Python)
_NS_URLIZED_CHAR = 200.0  # urlize: each character (the punctuation it trims)
_NS_TITLED = 250.0  # title: each character (a piece per word boundary, in Python)
_NS_LINE = 150.0  # indent: each line
_NS_QUOTED = 60.0  # urlencode: each UTF-8 byte (quoted one by one, in Python)
_NS_STRIPPED_TAG = 500.0  # striptags: each `<`, plus a copy of what is left of the text
# urlize's expressions keep ~180 bytes per leading or trailing bracket: longer words are refused.
URLIZE_LONGEST_WORD = 20_000


def _center(budget: Budget, value: Any, width: int = 80, *_: Any) -> Any:
    _built(budget, max(budget.text_size(value), width), f"center({width})")
    return value


def _indent(budget: Budget, s: Any, width: int | str = 4, *_: Any, **__: Any) -> Any:
    text = str(s)
    step = width if isinstance(width, int) else len(str(width))
    lines = text.count("\n") + 1
    _built(budget, len(text) + step * lines, f"indent({step})")
    budget.charge(lines * _NS_LINE)
    return s


def _wordwrap(
    budget: Budget,
    s: Any,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    *_: Any,
    **__: Any,
) -> Any:
    # textwrap goes word by word, and a long word is cut into a line per `width` characters.
    text = str(s)
    lines = len(text) // max(width, 1) + text.count("\n") + 1
    need(len(text) + lines * len(wrapstring or "\n"), f"wordwrap({width})")
    budget.charge((len(text.split()) + lines) * _NS_WRAPPED)
    return s


def replaced_size(text: Any, old: Any, new: Any, count: int | None = None) -> int:
    text, old, new = str(text), str(old), str(new)
    times = len(text) + 1 if old == "" else text.count(old)
    if count is not None and count >= 0:
        times = min(times, count)
    return len(text) + times * max(0, len(new) - len(old))


def _replace(budget: Budget, s: Any, old: Any, new: Any, count: int | None = None) -> Any:
    _built(budget, replaced_size(s, old, new, count), "replace")
    return s


def _format(budget: Budget, value: Any, *args: Any, **kwargs: Any) -> Any:
    _built(budget, printf_size(budget, str(value), kwargs or args), "format")
    return value


def _urlize(
    budget: Budget,
    value: Any,
    trim_url_limit: int | None = None,
    nofollow: bool = False,
    target: str | None = None,
    rel: str | None = None,
    *_: Any,
    **__: Any,
) -> Any:
    # Each word that may be a link becomes <a href="word" rel=… target=…>word</a>.
    text = str(value)
    words = text.split()
    longest = max(map(len, words), default=0)
    if longest > URLIZE_LONGEST_WORD:
        raise TemplateBudgetError(
            f"urlize of a word of {longest} characters: at most {URLIZE_LONGEST_WORD}"
        )
    budget.charge(len(words) * _NS_URLIZED + len(text) * _NS_URLIZED_CHAR)
    tag = 48 + len(str(target or "")) + len(str(rel or ""))
    links = [w for w in words if "." in w or "@" in w or ":" in w]
    need(len(text) + sum(len(w) + tag for w in links), "urlize")
    return value


def _title(budget: Budget, value: Any) -> Any:
    budget.charge(len(str(value)) * _NS_TITLED)
    return value


def _striptags(budget: Budget, value: Any) -> Any:
    # markupsafe removes one tag at a time, copying the rest of the text each time.
    text = str(value)
    tags = text.count("<")
    budget.charge(tags * (_NS_STRIPPED_TAG + len(text) * NS_CHAR / 16) + len(text) * _NS_OBJECT)
    return value


def _trim(budget: Budget, value: Any, chars: str | None = None) -> Any:
    _strip(budget, str(value), chars)
    return value


def _urlencode(budget: Budget, value: Any) -> Any:
    if isinstance(value, str):  # a dict's items are charged as it is walked
        size = len(value.encode("utf-8", "replace"))
        need(size * 3, "urlencode")
        budget.charge(size * _NS_QUOTED)
    return value


def _int(budget: Budget, value: Any, *_: Any, **__: Any) -> Any:
    if isinstance(value, Decimal):
        number_size(value)  # refuses one too large to turn into an integer
    return value


def _tojson(budget: Budget, value: Any, indent: int | None = None) -> Any:
    if indent is not None and indent > MAX_JSON_INDENT:
        raise TemplateBudgetError(f"tojson indent is at most {MAX_JSON_INDENT}")
    return value


def _batch(budget: Budget, value: Any, linecount: int, fill_with: Any = None) -> Any:
    need(linecount, f"batch({linecount})")
    return value


def _slice(budget: Budget, value: Any, slices: int, fill_with: Any = None) -> Any:
    budget.tick(max(slices, 0))  # one list per slice
    return value


def _sorted(budget: Budget, value: Any, *_: Any, **__: Any) -> Any:
    # Sorting compares each item with about log2(n) others.
    items = value if isinstance(value, Sized) else list(value)
    budget.charge(compared_cost(items) * max(len(items), 1).bit_length())
    return items


def _scanned(budget: Budget, value: Any, *_: Any, **__: Any) -> Any:
    # min, max and unique compare (or hash) each item once.
    items = value if isinstance(value, Sized) else list(value)
    budget.charge(compared_cost(items))
    return items


def _items_for_size(getter: Callable[[Any], Any] | None, items: list[Any]) -> list[Any]:
    return [getter(item) for item in items] if getter is not None else items


def joined(
    budget: Budget, getter: Callable[[Any], Any] | None, value: Any, d: str = ""
) -> list[Any]:
    items = list(value)
    parts = _items_for_size(getter, items)
    need(sum(budget.text_size(p) for p in parts) + len(str(d)) * len(parts), "join")
    return items


def summed(
    budget: Budget, getter: Callable[[Any], Any] | None, value: Any, start: Any = 0
) -> list[Any]:
    items = list(value)
    if isinstance(start, list | tuple | str):
        # Adding sequences copies the running total each time: quadratic.
        parts = _items_for_size(getter, items)
        total = len(start) + sum(len(p) for p in parts if isinstance(p, Sized))
        need(total, "sum")
        if total * len(parts) > MAX_CHARS:
            raise TemplateBudgetError(f"sum of {len(parts)} sequences would copy too much")
    return items


SIZED_FILTERS: dict[str, Callable[..., Any]] = {
    "batch": _batch,
    "center": _center,
    "dictsort": _sorted,
    "format": _format,
    "groupby": _sorted,
    "indent": _indent,
    "int": _int,
    "max": _scanned,
    "min": _scanned,
    "replace": _replace,
    "slice": _slice,
    "sort": _sorted,
    "striptags": _striptags,
    "title": _title,
    "tojson": _tojson,
    "trim": _trim,
    "unique": _scanned,
    "urlencode": _urlencode,
    "urlize": _urlize,
    "wordwrap": _wordwrap,
}


# --- methods -----------------------------------------------------------------------------------
# Only these attributes of the values a template sees are reachable (anything else is refused as
# unsafe by the sandbox); each method call is charged for the work it will do, before it runs.

# Codecs cheap and linear in C (names as codecs.lookup() gives them); idna and punycode are
# neither. Error handlers that never write more than the character they replace.
CODECS = frozenset({"utf-8", "ascii", "iso8859-1"})
ERROR_HANDLERS = frozenset({"strict", "ignore", "replace"})

STR_METHODS = frozenset({
    "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find",
    "format", "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit",
    "isidentifier", "islower", "isnumeric", "isprintable", "isspace", "istitle", "isupper",
    "join", "ljust", "lower", "lstrip", "partition", "removeprefix", "removesuffix", "replace",
    "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip", "split", "splitlines",
    "startswith", "strip", "swapcase", "title", "translate", "upper", "zfill",
})  # fmt: skip
_DATE = frozenset({
    "ctime", "day", "isocalendar", "isoformat", "isoweekday", "month", "strftime", "weekday",
    "year",
})  # fmt: skip
_TIME = frozenset({
    "hour", "isoformat", "microsecond", "minute", "second", "strftime", "tzinfo", "tzname",
    "utcoffset",
})  # fmt: skip
# Checked in this order: bool before int, datetime before date, Markup as str.
ATTRIBUTES: tuple[tuple[type | tuple[type, ...], frozenset[str]], ...] = (
    (str, STR_METHODS),
    ((bytes, bytearray), frozenset({"decode"})),
    ((list, tuple), frozenset({"count", "index"})),
    (dict, frozenset({"get", "items", "keys", "values"})),
    (datetime, _DATE | _TIME | {"astimezone", "date", "time", "timestamp"}),
    (date, _DATE),
    (time_of_day, _TIME),
    (timedelta, frozenset({"days", "microseconds", "seconds", "total_seconds"})),
    ((int, float), frozenset({"bit_length", "imag", "is_integer", "real"})),
    (Decimal, frozenset({"is_signed", "is_zero"})),
)


def allowed_attribute(obj: Any, attribute: str) -> bool:
    """Whether a template may read ``attribute`` of ``obj`` (values of other types: as the
    sandbox decides)."""
    for types, names in ATTRIBUTES:
        if isinstance(obj, types):
            return attribute in names
    return True


def _linear(budget: Budget, s: Any, *args: Any, **kwargs: Any) -> None:
    texts = [a for a in (*args, *kwargs.values()) if isinstance(a, str | bytes)]
    budget.charge((len(s) + sum(len(t) for t in texts)) * NS_CHAR)


def _built(budget: Budget, size: int, what: str) -> None:
    need(size, what)
    budget.charge(size * NS_CHAR)


def _widened(budget: Budget, s: Any, width: int, *_: Any) -> None:
    _built(budget, max(len(s), width), "a padded string")


def _expandtabs(budget: Budget, s: str, tabsize: int = 8) -> None:
    _built(budget, len(s) + s.count("\t") * max(tabsize, 0), "expandtabs()")


def _join_method(budget: Budget, s: str, items: Sequence[Any]) -> None:
    texts = [p for p in items if isinstance(p, str)]
    budget.charge(len(items) * _NS_OBJECT)
    _built(budget, sum(len(p) for p in texts) + len(s) * len(items), "join()")


def _translate(budget: Budget, s: str, table: Any) -> None:
    values = table.values() if isinstance(table, Mapping) else ()
    longest = max((len(v) for v in values if isinstance(v, str)), default=1)
    need(len(s) * max(longest, 1), "translate()")
    budget.charge(len(s) * _NS_LOOKUP)


def _replace_method(budget: Budget, s: str, old: str, new: str, count: int = -1) -> None:
    _built(budget, replaced_size(s, old, new, count), "replace()")


def _strip(budget: Budget, s: str, chars: str | None = None) -> None:
    # CPython tests each character against each of `chars`: the cost is their product.
    budget.charge(len(s) * NS_CHAR + len(s) * len(chars or "") * _NS_PAIR)


def _split(budget: Budget, s: str, sep: str | None = None, maxsplit: int = -1) -> None:
    pieces = s.count(sep) + 1 if isinstance(sep, str) and sep else len(s) // 2 + 1
    if maxsplit >= 0:
        pieces = min(pieces, maxsplit + 1)
    budget.charge(len(s) * NS_CHAR + pieces * _NS_OBJECT)


def _splitlines(budget: Budget, s: str, keepends: bool = False) -> None:
    budget.charge(len(s) * (NS_CHAR + _NS_OBJECT))  # at worst a line per character


def codec(encoding: Any, errors: Any) -> None:
    """Refuse a codec or error handler whose cost or output is not linear and small."""
    try:
        name = codecs.lookup(encoding).name
    except (LookupError, TypeError):
        name = str(encoding)
    if name not in CODECS or errors not in ERROR_HANDLERS:
        raise TemplateBudgetError(
            f"encoding {str(encoding)[:40]!r} with errors={str(errors)[:20]!r}: only "
            f"{', '.join(sorted(CODECS))} with errors {', '.join(sorted(ERROR_HANDLERS))}"
        )


def _encode(budget: Budget, s: Any, encoding: str = "utf-8", errors: str = "strict") -> None:
    codec(encoding, errors)
    budget.charge(len(s) * 4 * NS_CHAR)  # UTF-8 writes up to 4 bytes a character


def _strftime(budget: Budget, moment: Any, fmt: str) -> None:
    budget.charge(strftime_size(fmt) * _NS_OBJECT)


# The work of a method, charged before it is called (every other allowed one: _linear).
METHOD_COSTS: dict[str, Callable[..., None]] = {
    "center": _widened,
    "decode": _encode,
    "encode": _encode,
    "expandtabs": _expandtabs,
    "join": _join_method,
    "ljust": _widened,
    "lstrip": _strip,
    "replace": _replace_method,
    "rjust": _widened,
    "rsplit": _split,
    "rstrip": _strip,
    "split": _split,
    "splitlines": _splitlines,
    "strftime": _strftime,
    "strip": _strip,
    "translate": _translate,
    "zfill": _widened,
}


def check_method(
    budget: Budget, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """Charge a method call for its work and refuse one whose result would be too large;
    returns ``args`` (a ``join``'s items made a list first, so they are sized and iterated
    once)."""
    owner = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    if isinstance(owner, str | bytes | bytearray | datetime | date | time_of_day):
        if name == "join" and args and not isinstance(args[0], list | tuple):
            args = (list(budget.counted(args[0])), *args[1:])
        # Jinja passes its own loop and block variables along; the method never sees them.
        given = {k: v for k, v in kwargs.items() if k not in ("_loop_vars", "_block_vars")}
        cost = METHOD_COSTS.get(name)
        if cost is not None:
            cost(budget, owner, *args, **given)
        elif isinstance(owner, str | bytes | bytearray):
            _linear(budget, owner, *args, **given)
    return args


# --- code generation ---------------------------------------------------------------------------


def _tick(lineno: int) -> nodes.Expr:
    """``environment.budget_tick()`` (always true) in generated code. Jinja2 allows no new node
    types; an EnvironmentAttribute's name is written verbatim after ``environment.``."""
    return nodes.EnvironmentAttribute("budget_tick()", lineno=lineno)


class BudgetCodeGenerator(CodeGenerator):
    """Jinja2's code generator, with the budget's hooks where the sandbox has none."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # Every item drawn counts: in the loop's `if` when it has one (skipped items cost too),
        # else at the top of the body (recursive loops included: the body is their function).
        tick = _tick(node.lineno)
        if node.test is not None:
            node.test = nodes.And(tick, node.test, lineno=node.lineno)
        else:
            node.body = [nodes.ExprStmt(tick, lineno=node.lineno), *node.body]
        super().visit_For(node, frame)

    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:
        # `a in b`, `a == b < c`: each comparison charged before it runs. In a chain, the
        # operands after the first are passed unevaluated, so each is evaluated once and the
        # chain stops at the first false comparison, as Python does.
        chain = len(node.ops) > 1
        self.write(f"environment.budget_{'chain' if chain else 'compare'}(")
        self.visit(node.expr, frame)
        for operand in node.ops:
            self.write(f", {operand.op!r}, {'lambda: ' if chain else ''}")
            self.visit(operand.expr, frame)
        self.write(")")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # `a ~ b`: each operand sized before it becomes text, the result counted.
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.budget_built({join}((")
        for arg in node.nodes:
            self.write("environment.budget_operand(")
            self.visit(arg, frame)
            self.write("), ")
        self.write(")))")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._built(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._built(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx == "load":  # not the targets of `for a, b in` and `set a, b =`
            self._built(super().visit_Tuple, node, frame)
        else:
            super().visit_Tuple(node, frame)

    def _built(self, visit: Callable[[Any, Frame], None], node: nodes.Expr, frame: Frame) -> None:
        # A literal list, tuple or dict is sized as it is built, as a filter's result is.
        self.write("environment.budget_built(")
        visit(node, frame)
        self.write(")")

    def buffer(self, frame: Frame) -> None:
        # Blocks captured by `set`, macros, `filter` and `call` write to a counted buffer.
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.budget_buffer()")


class CountedBuffer(list[str]):
    """A captured block's buffer: what is written to it is counted and may not exceed
    ``MAX_OUTPUT`` characters."""

    __slots__ = ("_budget", "_size")

    def __init__(self, budget: Budget) -> None:
        super().__init__()
        self._budget = budget
        self._size = 0

    def append(self, item: str) -> None:
        self._add(len(item))
        super().append(item)

    def extend(self, items: Iterable[str]) -> None:
        items = tuple(items)
        self._add(sum(len(i) for i in items))
        super().extend(items)

    def _add(self, size: int) -> None:
        self._size += size
        if self._size > MAX_OUTPUT:
            raise TemplateBudgetError(f"captures a block of more than {MAX_OUTPUT} characters")
        self._budget.chars += size
        if self._budget.chars > MAX_CHARS:
            raise TemplateBudgetError(f"builds more than {MAX_CHARS} characters in all")
