"""Conditions as the workflow editor shows them: rows of field, operator and value pickers fed
by the catalogue (``linktime.conditions.catalogue()``), all of them or any of them ("match
any instead of all"). Conditions the rows cannot show exactly (groups nested through the API,
a comma inside a listed value, a value's outer spaces, a number compared with a custom field:
whatever a row would read back as another condition) are edited as JSON, so a save from the
editor never changes them.

Each list lives under a prefix in the form and in the service's error paths (``conditions``,
``steps.1.when``, ``steps.2.settings.conditions``): a row's inputs are ``<prefix>.<j>.field``
(``.key`` for a custom field's key, ``.op``, ``.value``), and the service's paths
(``<prefix>.0.any.3.op`` when any is ticked) are placed back on the row's input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import conditions
from ..errors import FieldError
from . import forms

ROW_INPUTS = ("field", "key", "op", "value")
MAX_ROWS = conditions.MAX_TOP  # rows read back from one list
CUSTOM = conditions.CUSTOM + "*"  # the catalogue's entry for every custom.<key>
ORDER_OPS = ("gt", "gte", "lt", "lte")
TRUTH = {"true": True, "false": False}


@dataclass
class CondState:
    """One list of conditions as typed: ``rows`` (each input's text by name), ``any`` (one of
    them must hold, not all), ``json``: the list as JSON text when rows cannot show it."""

    rows: list[dict[str, str]] = field(default_factory=list)
    any: bool = False
    json: str | None = None

    def kept(self) -> dict[str, Any]:
        return {"rows": self.rows, "any": self.any, "json": self.json}

    @classmethod
    def from_kept(cls, kept: Mapping[str, Any] | None) -> CondState:
        kept = kept or {}
        return cls(list(kept.get("rows", [])), bool(kept.get("any")), kept.get("json"))


def blank_row() -> dict[str, str]:
    return dict.fromkeys(ROW_INPUTS, "")


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(_shown(v) for v in value)
    return "" if value is None else str(value)


def _row_of(node: Mapping[str, Any]) -> dict[str, str] | None:
    """A stored leaf condition as a row; None for a group."""
    if node.get("field") is None:
        return None
    name = str(node["field"])
    custom = name.startswith(conditions.CUSTOM)
    return {
        "field": CUSTOM if custom else name,
        "key": name.removeprefix(conditions.CUSTOM) if custom else "",
        "op": str(node.get("op", "")),
        "value": _shown(node.get("value")),
    }


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON: 50 is not "50", 50.0 nor true."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _shown_exactly(node: Mapping[str, Any]) -> dict[str, str] | None:
    """The stored condition as a row, when the row reads back as that very condition (as the
    browser posts it back unchanged); None for a group or a condition a row would change."""
    row = _row_of(node)
    leaf = {name: node.get(name) for name in ("field", "op", "value")}
    return row if row is not None and _same(_leaf(_as_typed(row)), leaf) else None


def from_stored(stored: Sequence[Mapping[str, Any]] | None) -> CondState:
    """Stored conditions (JSON) as the editor shows them: a list of conditions, or one any
    group of them, as rows; anything else as JSON."""
    nodes = list(stored or [])
    leaves = nodes
    any_of = len(nodes) == 1 and bool(nodes[0].get("any"))
    if any_of:
        leaves = list(nodes[0]["any"])
    rows = [_shown_exactly(n) for n in leaves]
    if all(r is not None for r in rows):
        return CondState([r for r in rows if r is not None], any_of)
    return CondState(json=json.dumps(nodes, indent=2))


def _as_typed(row: Mapping[str, str]) -> dict[str, str]:
    """A row's inputs as the form reads them (outer spaces are not part of what was meant)."""
    return {name: row.get(name, "").strip() for name in ROW_INPUTS}


def read(form: Mapping[str, str], prefix: str) -> CondState:
    """The list as the browser sent it."""
    if f"{prefix}.json" in form:
        return CondState(json=form[f"{prefix}.json"].replace("\r\n", "\n"))
    rows = []
    for j in range(MAX_ROWS * 2):
        if f"{prefix}.{j}.field" not in form:
            break
        rows.append(_as_typed({name: form.get(f"{prefix}.{j}.{name}", "") for name in ROW_INPUTS}))
    return CondState(rows, f"{prefix}.any" in form)


def _kind(row: Mapping[str, str]) -> conditions.Kind | None:
    if row["field"] == CUSTOM:
        return "custom"
    return conditions.kind_of(row["field"])


def _scalar(kind: conditions.Kind | None, op: str, text: str) -> Any:
    """A value as typed, as the condition takes it; what does not read is given as typed, so
    the service names the problem beside the input."""
    if kind == "boolean":
        return TRUTH.get(text.lower(), text)
    if kind == "number" or (kind == "custom" and op in ORDER_OPS):
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if number.is_integer() and "." not in text else number
    return text


def value_of(kind: conditions.Kind | None, op: str, text: str) -> Any:
    if op == "exists":
        return TRUTH.get(text.lower(), text) if text else True
    if op in ("in", "not_in"):
        return [_scalar(kind, op, t.strip()) for t in text.split(",") if t.strip()]
    return _scalar(kind, op, text)


def _leaf(row: Mapping[str, str]) -> dict[str, Any]:
    """A row as the condition the service takes."""
    name = conditions.CUSTOM + row["key"] if row["field"] == CUSTOM else row["field"]
    return {"field": name, "op": row["op"], "value": value_of(_kind(row), row["op"], row["value"])}


def _used(state: CondState) -> list[int]:
    """The rows that say something (a row left blank is left out)."""
    return [j for j, r in enumerate(state.rows) if r["field"] or r["value"]]


def to_data(state: CondState, prefix: str) -> tuple[list[Any], list[FieldError]]:
    """The conditions as the service takes them, and what the form could not read."""
    if state.json is not None:
        try:
            raw = json.loads(state.json or "[]")
        except ValueError as exc:
            return [], [FieldError(f"{prefix}.json", f"not valid JSON: {exc}")]
        return raw if isinstance(raw, list) else [raw], []
    leaves = [_leaf(state.rows[j]) for j in _used(state)]
    if state.any and leaves:
        return [{"any": leaves}], []
    return leaves, []


def place(error: FieldError, prefix: str, state: CondState) -> FieldError:
    """The service's error on this list, moved to the input it is about."""
    if error.field != prefix and not error.field.startswith(prefix + "."):
        return error
    if state.json is not None:
        return FieldError(f"{prefix}.json", error.message)
    parts = error.field.removeprefix(prefix).strip(".").split(".")
    if state.any and parts[:2] == ["0", "any"]:
        parts = parts[2:]
    used = _used(state)
    index = forms.whole_number(parts[0]) if parts[0] else None
    if index is None or index >= len(used):
        return FieldError(prefix, error.message)
    name = parts[1] if len(parts) > 1 and parts[1] in ROW_INPUTS else "field"
    row = used[index]
    if name == "field" and state.rows[row]["field"] == CUSTOM:
        name = "key"  # the custom field's key is what is at fault
    return FieldError(f"{prefix}.{row}.{name}", error.message)


def known(state: CondState, prefix: str) -> set[str]:
    """The error names this list's inputs show."""
    if state.json is not None:
        return {prefix, f"{prefix}.json"}
    return {prefix} | {f"{prefix}.{j}.{n}" for j in range(len(state.rows)) for n in ROW_INPUTS}


def edit(state: CondState, what: str) -> None:
    """Add a row ("add") or remove one ("remove:2"), for a browser without JS."""
    if what == "add":
        if len(state.rows) < MAX_ROWS:
            state.rows.append(blank_row())
        return
    index = forms.whole_number(what.removeprefix("remove:"))
    if index is not None and index < len(state.rows):
        del state.rows[index]


def catalogue_view() -> list[dict[str, Any]]:
    """The field picker's options: name, words, type and its operators."""
    return [
        {"field": f.field, "title": f.title, "type": f.type, "operators": f.operators}
        for f in conditions.catalogue()
    ]


OP_WORDS = {
    "eq": "is",
    "ne": "is not",
    "in": "is one of",
    "not_in": "is none of",
    "contains": "contains",
    "starts_with": "starts with",
    "exists": "is set",
    "gt": "is more than",
    "gte": "is at least",
    "lt": "is less than",
    "lte": "is at most",
    "before": "is before",
    "after": "is after",
}


def view(state: CondState, prefix: str) -> dict[str, Any]:
    """What the template draws: each row with its type, operators and value input kind."""
    kinds = {f.field: f for f in conditions.catalogue()}
    rows = []
    for j, row in enumerate(state.rows):
        found = kinds.get(row["field"])
        kind = found.type if found else None
        op = row["op"] or (found.operators[0] if found else "")
        if op == "exists" or kind == "boolean":
            control = "truth"
        elif op in ("in", "not_in"):
            control = "list"
        elif kind == "number" or (kind == "custom" and op in ORDER_OPS):
            control = "number"
        elif kind == "time":
            control = "time"
        else:
            control = "text"
        rows.append(
            {
                "index": j,
                "row": row,
                "op": op,
                "kind": kind or "",
                "operators": found.operators if found else sorted(OP_WORDS),
                "control": control,
                "custom": row["field"] == CUSTOM,
            }
        )
    return {"prefix": prefix, "rows": rows, "any": state.any, "json": state.json}
