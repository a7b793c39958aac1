"""Operator settings of plugins: read from the environment through pydantic-settings, one
helper for every plugin instead of a cache in each."""

from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import Any, TypeVar, cast

from pydantic import AliasChoices, BaseModel, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

M = TypeVar("M", bound=BaseModel)


class OperatorSettingError(ValueError):
    """A plugin's operator setting is invalid. Raised while plugins register, the processes
    that run the system refuse to start until it is fixed (``Registry.start_refusals``); raised
    by an action's ``execute``, the attempt ends as a retry with the code ``operator_settings``
    (every step of that action is affected, and they resume once the operator fixes it).
    ``problems`` says what is wrong with each environment variable at fault."""

    def __init__(self, message: str, problems: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or {}


def variables(prefix: str, model: type[BaseModel]) -> dict[str, str]:
    """The environment variable each field of ``model`` is read from, by field name: the
    field's own alias (``validation_alias``) where it has one, else ``prefix`` + its name, in
    upper case."""
    found: dict[str, str] = {}
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, str):
            found[name] = alias.upper()
        elif isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
            found[name] = alias.choices[0].upper()
        else:
            found[name] = f"{prefix}{name}".upper()
    return found


@lru_cache(maxsize=64)
def _reader(prefix: str, model: type[BaseModel]) -> tuple[type[BaseModel], tuple[str, ...]]:
    """A pydantic-settings class reading ``model`` from variables named ``prefix``+field, and
    every variable name it may read (the cache key of its values)."""
    config = SettingsConfigDict(env_prefix=prefix, extra="ignore")
    bases = (model,) if issubclass(model, BaseSettings) else (model, BaseSettings)
    reader = cast(type[BaseModel], type(model.__name__, bases, {"model_config": config}))
    names = set(variables(prefix, model).values())
    for info in model.model_fields.values():
        if isinstance(info.validation_alias, AliasChoices):
            names.update(c.upper() for c in info.validation_alias.choices if isinstance(c, str))
    return reader, tuple(sorted(names))


@lru_cache(maxsize=256)
def _read(prefix: str, model: type[BaseModel], values: tuple[str | None, ...]) -> BaseModel:
    # ``values`` is only the cache key: the reader reads that same environment itself, and an
    # invalid setting raises, which is not cached (it is checked again on every call).
    reader, read = _reader(prefix, model)
    try:
        return reader()
    except ValidationError as exc:
        names = variables(prefix, model)
        problems: dict[str, str] = {}
        for error in exc.errors():
            # A field read through an alias is located by that alias, a variable name.
            at = str(error["loc"][0]) if error["loc"] else ""
            name = names.get(at) or (at.upper() if at.upper() in read else prefix)
            problems.setdefault(name, error["msg"])
        said = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
        raise OperatorSettingError(f"invalid operator settings: {said}", problems) from None


def plugin_settings(prefix: str, model: type[M]) -> M:
    """The operator's settings for a plugin: ``model`` (a pydantic model, or a pydantic-settings
    class) read from the environment variables ``prefix`` + field name (upper case, e.g.
    ``LINKTIME_TEAMS_TIMEOUT`` for the field ``timeout`` under ``LINKTIME_TEAMS_``).

    Cheap enough to call on every attempt: the model is built again only when one of its
    variables changed. Invalid values raise ``OperatorSettingError`` naming the variables."""
    prefix = prefix.upper()
    _, names = _reader(prefix, model)
    environ = os.environ
    return cast(M, _read(prefix, model, tuple(environ.get(n) for n in names)))


def operator_timeout(prefix: str, model: type[BaseModel], extra: float = 0.0) -> float:
    """An action's ``timeout`` from its plugin's operator settings (``plugin_settings(prefix,
    model)``): their ``timeout`` field, plus ``extra`` seconds an attempt may spend past it.
    A timeout that is not a finite number of seconds above 0 raises ``OperatorSettingError``
    naming its variable. While the other settings are invalid every attempt stops at once with
    that error, so the field's default stands in."""
    variable = variables(prefix, model)["timeout"]
    try:
        timeout: Any = plugin_settings(prefix, model).model_dump(include={"timeout"})["timeout"]
    except OperatorSettingError as exc:
        if variable in exc.problems:
            problem = exc.problems[variable]
            raise OperatorSettingError(f"{variable} is not valid: {problem}") from None
        timeout = model.model_fields["timeout"].default
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise OperatorSettingError(
            f"{variable} is {timeout!r}: give a finite number of seconds above 0"
        )
    return float(timeout) + extra
