"""Input from outside (a JSON body, a dashboard form) validated as the JSON it came as, and
strictly: a string is not a boolean (``"yes"``) nor a number (``"30"``), a number is not a
timestamp. JSON mode keeps what strict Python mode would refuse but JSON means: an enum's value,
a timestamp or a URL as a string."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def validate_input(model: type[M], data: Mapping[str, Any]) -> M:
    """``data`` (JSON values only) as ``model``; raises pydantic's ValidationError."""
    return model.model_validate_json(json.dumps(data), strict=True)
