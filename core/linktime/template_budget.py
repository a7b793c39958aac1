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
  ``indent``, ``wordwrap``, ``replace``, ``format`` and ``%`` widths, ``*`` repetition,
  ``**`` and ``*`` on integers (``MAX_INT_BITS``), ``batch``, ``slice``, ``join``, ``sum``,
  ``tojson`` indents, the str methods ``center``/``ljust``/``rjust``/``zfill``/``expandtabs``/
  ``replace``/``join``/``translate`` and ``int.to_bytes``; ``range`` may not exceed ``MAX_STEPS``.
- ``MAX_CPU_SECONDS`` of the rendering thread's CPU time, checked at those counters.

Jinja2's sandbox has no hook for loops, ``~`` or captured blocks, so a code generator adds them:
each loop iteration calls ``environment.budget_tick()``, each ``~`` operand and result passes
``environment.budget_operand``/``budget_built``, and each buffer is a ``CountedBuffer``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, KeysView, Mapping, Sized, ValuesView
from contextvars import ContextVar
from string import Formatter
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame

MAX_OUTPUT = 100_000  # characters a template renders to; also the largest value it may build
MAX_CHARS = 1_000_000  # characters a render may build in all
MAX_STEPS = 10_000  # loop iterations, calls, filters and items iterated or turned into text
MAX_CPU_SECONDS = 0.04  # the rendering thread's CPU time (rendering does no I/O)
MAX_INT_BITS = 4096  # integers a template computes with `*` and `**`
MAX_JSON_INDENT = 16

_CLOCK_EVERY = 16  # steps between CPU-time checks (reading the thread clock costs ~0.3 µs)
LARGE = 1024  # characters: a filter or method given a longer string checks the clock first


class TemplateBudgetError(ValueError):
    """A render stopped for exceeding its budget. Deliberately not a ``TemplateError``: plugins
    catch those as ``template_error``, while this one reaches the engine, which fails the step
    permanently with ``template_budget`` whatever the plugin (the same template and booking
    would stop again). Saving a workflow refuses it like any invalid value (a 422)."""


class Budget:
    """The counters of one render."""

    __slots__ = ("chars", "deadline", "steps")

    def __init__(self) -> None:
        self.steps = 0
        self.chars = 0
        self.deadline = time.thread_time() + MAX_CPU_SECONDS

    def tick(self, count: int = 1) -> None:
        self.steps += count
        if self.steps > MAX_STEPS:
            raise TemplateBudgetError(
                f"more than {MAX_STEPS} steps (loop iterations, calls, filters and the items "
                "they go through)"
            )
        if count > 1 or not self.steps % _CLOCK_EVERY:  # many items at once: costly work ahead
            self.clock()

    def clock(self) -> None:
        if time.thread_time() > self.deadline:
            raise TemplateBudgetError(f"more than {int(MAX_CPU_SECONDS * 1000)} ms of CPU time")

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


# What str() shows item by item (dicts through Mapping).
CONTAINERS = (list, tuple, set, frozenset, KeysView, ValuesView, Mapping)
_SCALAR = 24  # the text of a number or a date, generously

current: ContextVar[Budget] = ContextVar("linktime_template_budget")


def need(size: int, what: str) -> None:
    """Refuse building ``what`` when it would be larger than a value may be."""
    if size > MAX_OUTPUT:
        raise TemplateBudgetError(f"{what} would build more than {MAX_OUTPUT} characters")


def int_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateBudgetError(
            f"{what} would compute an integer of more than {MAX_INT_BITS} bits"
        )


# --- formatting widths -------------------------------------------------------------------------

_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_FORMAT_SPEC = re.compile(r"^(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?[a-zA-Z%]?$")


def _numbers(values: Iterable[Any]) -> int:
    return sum(v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0)


def printf_size(budget: Budget, template: str, args: Any) -> int:
    """An upper bound of ``len(template % args)``: the widths and precisions it asks for (``*``
    ones taken from ``args``) plus the arguments' text (a mapping's may repeat)."""
    named = isinstance(args, Mapping)
    values = list(args.values()) if named else list(args) if isinstance(args, tuple) else [args]
    specs = _PRINTF.findall(template)
    widths = sum(int(w) for spec in specs for w in spec if w.isdigit())
    if any("*" in spec for spec in specs):
        widths += _numbers(values)
    texts = [budget.text_size(v) for v in values]
    return len(template) + widths + (len(specs) * max(texts, default=0) if named else sum(texts))


def format_size(budget: Budget, template: str, args: Iterable[Any]) -> int:
    """An upper bound of ``len(template.format(*args))``, as ``printf_size`` (a field may name
    any argument, so each counts as the largest)."""
    args = list(args)
    fields = widths = 0
    for _, name, spec, _ in Formatter().parse(template):
        if name is None:
            continue
        fields += 1
        if spec and "{" in spec:  # a width given by an argument
            widths += _numbers(args)
        elif spec and (found := _FORMAT_SPEC.match(spec)):
            widths += sum(int(n) for n in found.groups() if n)
    largest = max((budget.text_size(v) for v in args), default=0)
    return len(template) + widths + fields * largest


# --- filters -----------------------------------------------------------------------------------

# Filters that walk their input item by item: a step per item.
ITERATING = frozenset({
    "batch", "dictsort", "groupby", "items", "join", "list", "map", "max", "min", "reject",
    "rejectattr", "select", "selectattr", "slice", "sort", "sum", "unique",
})  # fmt: skip
# Filters that go through their text word by word in Python: a step per word.
WORDWISE = frozenset({"pprint", "title", "urlize", "wordwrap"})
# Filters that turn their input (and arguments) into text: lists and dicts are walked first.
STRINGIFYING = frozenset({
    "capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower",
    "pprint", "replace", "safe", "string", "striptags", "title", "tojson", "trim",
    "truncate", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr",
})  # fmt: skip


def _center(budget: Budget, value: Any, width: int = 80, *_: Any) -> Any:
    need(max(budget.text_size(value), width), f"center({width})")
    return value


def _indent(budget: Budget, s: Any, width: int | str = 4, *_: Any, **__: Any) -> Any:
    text = str(s)
    step = width if isinstance(width, int) else len(str(width))
    need(len(text) + step * (text.count("\n") + 1), f"indent({step})")
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
    text = str(s)
    lines = len(text) // max(width, 1) + text.count("\n") + 1
    need(len(text) + lines * len(wrapstring or "\n"), f"wordwrap({width})")
    return s


def replaced_size(text: Any, old: Any, new: Any, count: int | None = None) -> int:
    text, old, new = str(text), str(old), str(new)
    times = len(text) + 1 if old == "" else text.count(old)
    if count is not None and count >= 0:
        times = min(times, count)
    return len(text) + times * max(0, len(new) - len(old))


def _replace(budget: Budget, s: Any, old: Any, new: Any, count: int | None = None) -> Any:
    need(replaced_size(s, old, new, count), "replace")
    return s


def _format(budget: Budget, value: Any, *args: Any, **kwargs: Any) -> Any:
    need(printf_size(budget, str(value), kwargs or args), "format")
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
    tag = 48 + len(str(target or "")) + len(str(rel or ""))
    links = [w for w in text.split() if "." in w or "@" in w or ":" in w]
    need(len(text) + sum(len(w) + tag for w in links), "urlize")
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
    "format": _format,
    "indent": _indent,
    "replace": _replace,
    "slice": _slice,
    "tojson": _tojson,
    "urlize": _urlize,
    "wordwrap": _wordwrap,
}


# --- methods -----------------------------------------------------------------------------------


def _width_method(s: Any, width: int, *_: Any) -> int:
    return max(len(s), width)


def _expandtabs(s: str | bytes, tabsize: int = 8) -> int:
    tabs = s.count("\t") if isinstance(s, str) else s.count(b"\t")
    return len(s) + tabs * max(tabsize, 0)


def _join_method(s: Any, items: Any) -> int:
    parts = list(items) if isinstance(items, list | tuple) else []
    return sum(len(p) for p in parts if isinstance(p, str | bytes)) + len(s) * len(parts)


def _translate(s: Any, table: Any) -> int:
    values = table.values() if isinstance(table, Mapping) else table
    longest = max((len(v) for v in values if isinstance(v, str | bytes)), default=1)
    return len(s) * max(longest, 1)


def _replace_method(s: Any, old: Any, new: Any, count: int = -1) -> int:
    if isinstance(s, bytes):
        s, old, new = s.decode("latin-1"), old.decode("latin-1"), new.decode("latin-1")
    return replaced_size(s, old, new, count)


# Methods of str and bytes whose result can be far larger than the string: its size, up front.
TEXT_METHODS: dict[str, Callable[..., int]] = {
    "center": _width_method,
    "ljust": _width_method,
    "rjust": _width_method,
    "zfill": _width_method,
    "expandtabs": _expandtabs,
    "join": _join_method,
    "translate": _translate,
    "replace": _replace_method,
}


def check_method(
    budget: Budget, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """Refuse a method call whose result would be too large; returns ``args`` (a ``join``'s
    items made a list first, so they are sized and iterated once)."""
    owner = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    if isinstance(owner, str | bytes) and name in TEXT_METHODS:
        if name == "join" and args and not isinstance(args[0], list | tuple):
            args = (list(budget.counted(args[0])), *args[1:])
        need(TEXT_METHODS[name](owner, *args, **kwargs), f"{name}()")
    elif isinstance(owner, int) and name == "to_bytes":
        length = args[0] if args else kwargs.get("length", 1)
        need(length, "to_bytes()")
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
