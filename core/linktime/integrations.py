"""An account's integrations (Twilio, Slack, email sender…): the settings actions take their
credentials from. Write-only for secrets: reads say whether it is connected and mask them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from . import services
from .crypto import masked, secret_fields, with_kept_secrets
from .engine import Hub
from .errors import InputError, NotFound, pydantic_fields
from .inputs import validate_input
from .storage import Integration


class CallbackOut(BaseModel):
    """Where the provider of an integration calls back for this account (a plugin's
    ``Callback``): the URL to enter in the provider's console, when the server has a public
    address."""

    name: str
    url: str | None = Field(description="None: the server has no LINKTIME_PUBLIC_URL")
    description: str


class IntegrationOut(BaseModel):
    name: str
    connected: bool
    actions: list[str]
    settings: dict[str, Any] | None = None
    updated_at: datetime | None = None
    callbacks: list[CallbackOut] = Field(default_factory=list)


def _models(hub: Hub, name: str) -> dict[str, type[BaseModel]]:
    """The credentials model of every installed action that uses integration ``name``."""
    models = {
        a.name: a.credentials
        for a in hub.registry.actions.values()
        if a.integration == name and a.credentials is not None
    }
    if not models:
        known = ", ".join(known_integrations(hub)) or "none"
        raise NotFound(f"no integration {name!r}; installed: {known}")
    return models


def known_integrations(hub: Hub) -> list[str]:
    return sorted({a.integration for a in hub.registry.actions.values() if a.integration})


def connect(hub: Hub, account_id: str, name: str, data: dict[str, Any]) -> IntegrationOut:
    """Validate ``data`` against every action that uses this integration, then store it with
    its secrets sealed (a field secret to any of them is sealed). A secret left out or sent
    masked keeps the stored one, as on a workflow's PUT."""
    models = _models(hub, name)
    with hub.db.connect() as conn:
        stored = conn.scalar(
            select(Integration.settings).where(
                Integration.account_id == account_id, Integration.name == name
            )
        )
    problems = []
    for model in models.values():
        try:
            kept = hub.sealer.secrets(model, stored) if stored else None
        except ValueError:  # cannot be decrypted (the key changed): only new values count
            kept = None
        data, masks = with_kept_secrets(model, data, kept, "")
        problems += masks
    if problems:
        raise InputError(f"the {name} settings are not valid", problems)
    secrets: set[str] = set()
    checked: dict[str, BaseModel] = {}
    for action, model in models.items():
        try:
            checked[action] = validate_input(model, data)
        except ValidationError as exc:
            raise InputError(f"the {name} settings are not valid", pydantic_fields(exc)) from None
        secrets |= set(secret_fields(model))
    # The provider is asked (by the first action that can ask it) before anything is stored:
    # settings it refuses are not kept.
    for action, credentials in checked.items():
        verify = hub.registry.actions[action].verify_credentials
        if verify is not None:
            refused = verify(credentials)
            if refused:
                raise InputError(f"the {name} settings were refused", refused)
            break
    stored = hub.sealer.seal_fields(data, secrets)
    now = hub.clock()
    values = {"account_id": account_id, "name": name, "settings": stored, "updated_at": now}
    insert = pg_insert if hub.db.dialect.name == "postgresql" else sqlite_insert
    statement = insert(Integration).values(**values)
    with hub.db.begin() as conn:
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=["account_id", "name"],
                set_={"settings": stored, "updated_at": now},
            )
        )
    return get(hub, account_id, name)


def disconnect(hub: Hub, account_id: str, name: str) -> None:
    _models(hub, name)
    with hub.db.begin() as conn:
        conn.execute(
            delete(Integration).where(
                Integration.account_id == account_id, Integration.name == name
            )
        )


def get(hub: Hub, account_id: str, name: str) -> IntegrationOut:
    models = _models(hub, name)
    with hub.db.connect() as conn:
        row = conn.execute(
            select(Integration.settings, Integration.updated_at).where(
                Integration.account_id == account_id, Integration.name == name
            )
        ).first()
    callbacks = [
        CallbackOut(
            name=c.name,
            url=services.callback_url(hub, account_id, c.name),
            description=c.description,
        )
        for c in hub.registry.callbacks.values()
        if c.integration == name
    ]
    out = IntegrationOut(
        name=name, connected=row is not None, actions=sorted(models), callbacks=callbacks
    )
    if row is not None:
        shown = row.settings
        for model in models.values():
            shown = masked(model, shown)
        out.settings, out.updated_at = shown, row.updated_at
    return out


def list_all(hub: Hub, account_id: str) -> list[IntegrationOut]:
    return [get(hub, account_id, name) for name in known_integrations(hub)]
