"""Secrets at rest: settings fields typed ``SecretStr`` (or ``dict[str, SecretStr]``, e.g. request
headers, each value a secret) are stored Fernet-encrypted, only ever shown masked, and kept when
a save leaves them out or sends the mask back."""

from __future__ import annotations

import base64
import hashlib
import json
import types
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Annotated, Any, Union, get_args, get_origin

from cryptography.fernet import Fernet, InvalidToken
from pydantic import BaseModel, SecretStr, ValidationError

from .errors import FieldError

SEALED = "sealed:"
MASK = "********"


def _is_secret(annotation: Any) -> bool:
    """``SecretStr``, optional or not, or a mapping whose values are."""
    if annotation is SecretStr:
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return _is_secret(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_is_secret(arg) for arg in get_args(annotation))
    if origin in (dict, Mapping):
        args = get_args(annotation)
        return len(args) == 2 and _is_secret(args[1])
    return False


def secret_fields(model: type[BaseModel]) -> list[str]:
    return [name for name, f in model.model_fields.items() if _is_secret(f.annotation)]


def _each_secret(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` applied to a secret field's value, or to each value of a mapping of secrets."""
    if isinstance(value, dict):
        return {k: None if v is None else fn(v) for k, v in value.items()}
    return None if value is None else fn(value)


class Sealer:
    def __init__(self, secret_key: str) -> None:
        digest = hashlib.sha256(secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))
        # Keyed by the stored JSON: every run of a workflow carries its steps' stored settings
        # verbatim (the same ciphertext), so a worker decrypts and validates each once.
        self._opened = lru_cache(maxsize=1024)(self._open_json)

    def seal(self, model: type[BaseModel], value: BaseModel) -> dict[str, Any]:
        """The JSON to store for validated settings, secrets encrypted."""
        return self.seal_fields(revealed(value), set(secret_fields(model)))

    def seal_fields(self, data: dict[str, Any], secrets: set[str]) -> dict[str, Any]:
        def encrypt(value: Any) -> str:
            return SEALED + self._fernet.encrypt(str(value).encode()).decode()

        return {k: _each_secret(v, encrypt) if k in secrets else v for k, v in data.items()}

    def secrets(self, model: type[BaseModel], stored: Mapping[str, Any]) -> dict[str, Any]:
        """The secrets among stored settings, decrypted (the other fields left out)."""
        out = {}
        for name in secret_fields(model):
            if name not in stored:
                continue

            def decrypt(value: Any, name: str = name) -> Any:
                if not (isinstance(value, str) and value.startswith(SEALED)):
                    return value  # stored before it was a secret: in clear
                try:
                    return self._fernet.decrypt(value[len(SEALED) :]).decode()
                except InvalidToken:
                    raise ValueError(
                        f"setting {name!r} cannot be decrypted: LINKTIME_SECRET_KEY changed?"
                    ) from None

            out[name] = _each_secret(stored[name], decrypt)
        return out

    def open(self, model: type[BaseModel], stored: dict[str, Any]) -> BaseModel:
        """Validated settings with their secrets decrypted. Shared between callers: read-only."""
        return self._opened(model, json.dumps(stored, sort_keys=True))

    def _open_json(self, model: type[BaseModel], stored: str) -> BaseModel:
        data = json.loads(stored)
        data.update(self.secrets(model, data))
        try:
            return model.model_validate(data)
        except ValidationError as exc:  # never echo the input: it holds secrets
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(problems) from None


def masked(model: type[BaseModel] | None, stored: dict[str, Any]) -> dict[str, Any]:
    """Stored settings as the API shows them: secrets replaced by a mask."""
    data = dict(stored)
    for name in secret_fields(model) if model else ():
        if name in data:
            data[name] = _each_secret(data[name], lambda _: MASK)
    if model is None:  # the action is not installed: hide anything that looks sealed
        data = {
            k: _each_secret(v, lambda s: MASK if isinstance(s, str) and s.startswith(SEALED) else s)
            for k, v in data.items()
        }
    return data


def revealed(value: BaseModel) -> dict[str, Any]:
    """Validated settings as JSON with their secrets in clear (to store them sealed, or to show
    a generated one once)."""
    data = value.model_dump(mode="json")
    for name in secret_fields(type(value)):
        data[name] = _each_secret(getattr(value, name), SecretStr.get_secret_value)
    return data


def with_kept_secrets(
    model: type[BaseModel],
    given: Mapping[str, Any],
    kept: Mapping[str, Any] | None,
    where: str,
) -> tuple[dict[str, Any], list[FieldError]]:
    """Settings to validate on a save: each secret left out, or sent as the mask, takes the
    stored value (``kept``: the stored secrets in clear, None when nothing is stored); in a
    mapping of secrets, per key. Only a new value changes a secret. The mask where nothing is
    stored is a problem, named under ``where`` (a prefix such as ``steps.0.settings``, or "")."""
    data = dict(given)
    problems: list[FieldError] = []
    kept = kept or {}

    def missing(*path: str) -> None:
        problems.append(
            FieldError(
                ".".join(p for p in (where, *path) if p),
                f"{MASK} stands for the stored secret, and none is stored: send it",
            )
        )

    for name in secret_fields(model):
        stored = kept.get(name)
        if name not in data:
            if stored is not None:
                data[name] = stored
        elif data[name] == MASK:
            if stored is None or isinstance(stored, dict):
                missing(name)
                del data[name]  # named once, not again by the model's own checks
            else:
                data[name] = stored
        elif isinstance(data[name], dict):
            stored_map = stored if isinstance(stored, dict) else {}
            values = {}
            for key, value in data[name].items():
                if value != MASK:
                    values[key] = value
                elif (found := _stored_entry(stored_map, key)) is None:
                    missing(name, key)
                else:
                    values[key] = found
            data[name] = values
    return data, problems


def _stored_entry(stored: Mapping[str, Any], key: str) -> Any:
    """The stored value under ``key``, else under the one stored key equal to it ignoring case:
    such mappings hold HTTP headers, whose names are case-insensitive (``authorization`` sent
    masked keeps the stored ``Authorization``)."""
    if key in stored:
        return stored[key]
    same = [k for k in stored if k.casefold() == key.casefold()]
    return stored[same[0]] if len(same) == 1 else None
