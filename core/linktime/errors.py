"""Errors the API turns into one JSON shape: ``{"error": code, "message": …, "fields": […]}``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


@dataclass
class InputError(Exception):
    """Bad input: nothing was stored."""

    message: str
    fields: list[FieldError] = field(default_factory=list)
    status: int = 422
    code: str = "invalid_input"

    def __str__(self) -> str:
        details = "; ".join(f"{f.field}: {f.message}" for f in self.fields)
        return f"{self.message} ({details})" if details else self.message


class NotFound(Exception):
    """Missing, or belonging to another account: both answer 404."""


def pydantic_fields(exc: object, prefix: str = "") -> list[FieldError]:
    """Field errors from a pydantic ValidationError, with dotted paths like ``booking.start``."""
    from pydantic import ValidationError

    assert isinstance(exc, ValidationError)
    out = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"])
        full = f"{prefix}.{path}" if prefix and path else (prefix or path or "body")
        out.append(FieldError(full, err["msg"]))
    return out
