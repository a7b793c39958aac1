"""Secrets at rest: settings fields typed ``SecretStr`` are stored Fernet-encrypted and only
ever shown masked."""

from __future__ import annotations

import base64
import hashlib
import json
import types
from functools import lru_cache
from typing import Any, Union, get_args, get_origin

from cryptography.fernet import Fernet, InvalidToken
from pydantic import BaseModel, SecretStr, ValidationError

SEALED = "sealed:"
MASK = "********"


def secret_fields(model: type[BaseModel]) -> list[str]:
    def is_secret(annotation: Any) -> bool:
        if annotation is SecretStr:
            return True
        if get_origin(annotation) in (Union, types.UnionType):
            return any(is_secret(arg) for arg in get_args(annotation))
        return False

    return [name for name, f in model.model_fields.items() if is_secret(f.annotation)]


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
        return {
            k: SEALED + self._fernet.encrypt(str(v).encode()).decode()
            if k in secrets and v is not None
            else v
            for k, v in data.items()
        }

    def open(self, model: type[BaseModel], stored: dict[str, Any]) -> BaseModel:
        """Validated settings with their secrets decrypted. Shared between callers: read-only."""
        return self._opened(model, json.dumps(stored, sort_keys=True))

    def _open_json(self, model: type[BaseModel], stored: str) -> BaseModel:
        data = json.loads(stored)
        for name in secret_fields(model):
            value = data.get(name)
            if isinstance(value, str) and value.startswith(SEALED):
                try:
                    data[name] = self._fernet.decrypt(value[len(SEALED) :]).decode()
                except InvalidToken:
                    raise ValueError(
                        f"setting {name!r} cannot be decrypted: LINKTIME_SECRET_KEY changed?"
                    ) from None
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
        if data.get(name) is not None:
            data[name] = MASK
    if model is None:  # the action is not installed: hide anything that looks sealed
        data = {
            k: MASK if isinstance(v, str) and v.startswith(SEALED) else v for k, v in data.items()
        }
    return data


def revealed(value: BaseModel) -> dict[str, Any]:
    """Validated settings as JSON with their secrets in clear (shown once, on creation)."""
    data = value.model_dump(mode="json")
    for name in secret_fields(type(value)):
        secret = getattr(value, name)
        if secret is not None:
            data[name] = secret.get_secret_value()
    return data
