"""HTML forms generated from pydantic models, so an action or an integration from a third-party
plugin gets a settings form for free.

A model field becomes one input, chosen from its annotation: ``str`` a text input (a textarea for
message templates, ``TemplateStr``, and for long strings), ``bool`` a checkbox, ``Literal``/enum a
select, numbers a number input, lists a comma-separated input, ``dict[str, str]`` a textarea of
``name: value`` lines (``dict[str, SecretStr]`` too, its values shown masked: a value left as
the mask keeps the stored one), ``SecretStr`` a password input that is never filled in (left
blank, it keeps the stored secret), anything else a JSON textarea. What the browser sends back
is kept raw, so a form re-rendered after an error shows what was typed (secrets excepted).
"""

from __future__ import annotations

import json
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import MaxLen
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ..crypto import MASK
from ..errors import FieldError
from ..inputs import is_hidden
from ..templating import check_template

Kind = Literal[
    "text", "textarea", "password", "checkbox", "select", "number", "list", "mapping", "json"
]
Raw = str | bool
LONG_TEXT = 2048  # str fields allowing more than this many characters get a textarea
_ACRONYMS = {
    "url": "URL",
    "id": "ID",
    "sid": "SID",
    "smtp": "SMTP",
    "html": "HTML",
    "api": "API",
    "sms": "SMS",
}


@dataclass(frozen=True)
class FieldSpec:
    name: str
    label: str
    kind: Kind
    required: bool
    help: str = ""
    choices: tuple[str, ...] = ()
    nullable: bool = False
    integer: bool = False
    template: bool = False
    generated: bool = False  # a secret generated when left blank
    default: Raw = ""
    # Kept by the form but not shown: set by an action of its own (a rotated-out secret), the
    # plugin marks it with ``Field(json_schema_extra={"hidden": True})``.
    hidden: bool = False


def label_for(name: str) -> str:
    words = [_ACRONYMS.get(w, w) for w in name.split("_")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def _unwrap(annotation: Any) -> tuple[Any, bool, list[Any]]:
    """(inner type, accepts None, Annotated metadata met on the way)."""
    metadata: list[Any] = []
    nullable = False
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            metadata += list(annotation.__metadata__)
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            nullable = nullable or len(args) < len(get_args(annotation))
            if len(args) != 1:
                return annotation, nullable, metadata
            annotation = args[0]
        else:
            return annotation, nullable, metadata


def _is_template(metadata: list[Any]) -> bool:
    return any(getattr(m, "func", None) is check_template for m in metadata)


def _max_length(metadata: list[Any]) -> int | None:
    for m in metadata:
        if isinstance(m, MaxLen):
            return m.max_length
    return None


def _display(value: Any) -> Raw:
    """A stored value as the form shows it."""
    if value is None:
        return ""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple | set | frozenset) and all(
        isinstance(v, str | int | float) for v in value
    ):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return "\n".join(f"{k}: {v}" for k, v in value.items())
    return json.dumps(value, indent=2, default=str)


def field_spec(name: str, info: FieldInfo) -> FieldSpec:
    inner, nullable, metadata = _unwrap(info.annotation)
    metadata = list(info.metadata) + metadata
    template = _is_template(metadata)
    origin = get_origin(inner)
    choices: tuple[str, ...] = ()
    integer = False
    secret_values = False
    kind: Kind
    if inner is SecretStr:
        kind = "password"
    elif inner is bool:
        kind = "checkbox"
    elif origin is Literal:
        kind, choices = "select", tuple(str(a) for a in get_args(inner))
    elif isinstance(inner, type) and issubclass(inner, Enum):
        kind, choices = "select", tuple(str(m.value) for m in inner)
    elif inner is int or inner is float:
        kind, integer = "number", inner is int
    elif inner is str:
        max_length = _max_length(metadata)
        long = max_length is not None and max_length > LONG_TEXT
        kind = "textarea" if template or long else "text"
    elif origin in (list, tuple, set, frozenset) or inner in (list, tuple, set, frozenset):
        kind = "list"
    elif origin is dict or inner is dict:
        value_type = get_args(inner)[1] if len(get_args(inner)) == 2 else Any
        value_inner = _unwrap(value_type)[0]
        kind = "mapping" if value_inner in (str, SecretStr) else "json"
        secret_values = value_inner is SecretStr
    else:
        kind = "json"
    default: Raw = ""
    if info.default is not PydanticUndefined and kind != "password":
        default = _display(info.default)
    elif info.default_factory is not None and kind in ("list", "mapping"):
        default = ""
    help_text = info.description or ""
    if kind == "list":
        help_text = (help_text + " " if help_text else "") + "(comma-separated)"
    elif kind == "mapping":
        keep = f"; leave {MASK} to keep a stored value" if secret_values else ""
        help_text = (help_text + " " if help_text else "") + f"(one 'name: value' per line{keep})"
    return FieldSpec(
        name=name,
        label=info.title or label_for(name),
        kind=kind,
        required=info.is_required(),
        help=help_text,
        choices=choices,
        nullable=nullable,
        integer=integer,
        template=template,
        generated=kind == "password" and info.default_factory is not None,
        default=default,
        hidden=is_hidden(info),
    )


def fields_of(model: type[BaseModel]) -> list[FieldSpec]:
    return [field_spec(name, info) for name, info in model.model_fields.items()]


def defaults(specs: list[FieldSpec]) -> dict[str, Raw]:
    return {s.name: s.default for s in specs}


def from_stored(
    specs: list[FieldSpec], stored: Mapping[str, Any]
) -> tuple[dict[str, Raw], set[str]]:
    """Stored (masked) settings as form values, and the names of secrets that are set."""
    values: dict[str, Raw] = {}
    secrets_set: set[str] = set()
    for s in specs:
        value = stored.get(s.name)
        if s.kind == "password":
            values[s.name] = ""
            if value is not None:
                secrets_set.add(s.name)
        elif s.name in stored:
            values[s.name] = _display(value)
        else:
            values[s.name] = s.default
    return values, secrets_set


def read_raw(specs: list[FieldSpec], form: Mapping[str, str], prefix: str) -> dict[str, Raw]:
    """What the browser sent for one model's fields (checkboxes: present or not)."""
    values: dict[str, Raw] = {}
    for s in specs:
        key = prefix + s.name
        if s.kind == "checkbox":
            values[s.name] = key in form
        else:
            values[s.name] = str(form.get(key, "")).replace("\r\n", "\n")
    return values


def whole_number(text: str) -> int | None:
    """``text`` as a whole number of ASCII digits, else None: ``"²"`` is a digit to
    ``str.isdigit`` but not to ``int``, and ``int`` refuses more than 4,300 digits."""
    if not (text.isascii() and text.isdigit()):
        return None
    try:
        return int(text)
    except ValueError:
        return None


@dataclass
class Parsed:
    data: dict[str, Any] = field(default_factory=dict)
    errors: list[FieldError] = field(default_factory=list)
    blank_secrets: set[str] = field(default_factory=set)


def parse(specs: list[FieldSpec], raw: Mapping[str, Raw], error_prefix: str = "") -> Parsed:
    """Form values to the data the model validates. A blank input is left out, so the field's
    default applies (or the model names it as required)."""
    out = Parsed()
    for s in specs:
        value = raw.get(s.name, "")
        if s.kind == "checkbox":
            out.data[s.name] = bool(value)
            continue
        text = str(value)
        if s.kind != "textarea" and s.kind != "json" and s.kind != "mapping":
            text = text.strip()
        if not text.strip():
            if s.kind == "password":
                out.blank_secrets.add(s.name)
            elif s.kind == "mapping":
                # Emptied, not left out: left out, a mapping of secrets would be kept whole.
                out.data[s.name] = {}
            continue
        if s.kind == "list":
            out.data[s.name] = [
                item.strip() for item in text.replace("\n", ",").split(",") if item.strip()
            ]
        elif s.kind == "mapping":
            mapping: dict[str, str] = {}
            for number, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                key, sep, val = line.partition(":")
                if not sep or not key.strip():
                    out.errors.append(
                        FieldError(
                            error_prefix + s.name, f"line {number}: write it as 'name: value'"
                        )
                    )
                    break
                mapping[key.strip()] = val.strip()
            else:
                out.data[s.name] = mapping
        elif s.kind == "json":
            try:
                out.data[s.name] = json.loads(text)
            except ValueError as exc:
                out.errors.append(FieldError(error_prefix + s.name, f"not valid JSON: {exc}"))
        elif s.kind == "password" and text == MASK:
            out.blank_secrets.add(s.name)
        elif s.kind == "number":
            # Typed here: the settings are validated strictly, where "3" is not a number.
            try:
                typed = int(text) if s.integer else float(text)
                if not math.isfinite(typed):  # "inf", "nan", "1e400": not JSON, nor storable
                    raise ValueError(text)
                out.data[s.name] = typed
            except ValueError:
                whole = "a whole number" if s.integer else "a number"
                out.errors.append(FieldError(error_prefix + s.name, f"enter {whole}"))
        else:
            out.data[s.name] = text
    return out
