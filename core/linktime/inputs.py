"""Input from outside (a JSON body, a dashboard form) validated as the JSON it came as, and
strictly: a string is not a boolean (``"yes"``) nor a number (``"30"``), a number is not a
timestamp. JSON mode keeps what strict Python mode would refuse but JSON means: an enum's value,
a timestamp or a URL as a string."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic.fields import FieldInfo

M = TypeVar("M", bound=BaseModel)


def validate_input(model: type[M], data: Mapping[str, Any]) -> M:
    """``data`` (JSON values only) as ``model``; raises pydantic's ValidationError."""
    return model.model_validate_json(json.dumps(data), strict=True)


def is_hidden(info: FieldInfo) -> bool:
    """Whether a settings field is set by an action of its own (a rotated-out secret), never
    typed: a plugin marks it ``Field(json_schema_extra={"hidden": True})``. Forms keep it
    unseen; runs under way take it from the workflow with the secrets."""
    extra = info.json_schema_extra
    return isinstance(extra, dict) and extra.get("hidden") is True


# Deeper than any booking or workflow needs, far below what pydantic and the JSON encoders
# handle (about 255 levels).
MAX_JSON_DEPTH = 64
_FIELD_PATH = 3  # how much of a too-deep value's path names the field


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> str | None:
    """Where ``value`` (decoded JSON) nests lists and objects deeper than ``limit``, as the
    dotted path of the field that holds them, or None. A loop, not recursion: the depth is the
    attacker's choice."""
    stack: list[tuple[Any, int, tuple[str, ...]]] = [(value, 0, ())]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, dict):
            children: Iterable[tuple[Any, Any]] = item.items()
        elif isinstance(item, list):
            children = enumerate(item)
        else:
            continue
        if depth >= limit:
            return ".".join(path[:_FIELD_PATH]) or "body"
        stack.extend((v, depth + 1, (*path, str(k))) for k, v in children)
    return None
