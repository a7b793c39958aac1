"""Account integrations: write-only secrets, sealed at rest, handed to actions as credentials."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from linktime import plugins
from linktime.actions import ActionContext, ActionType, Result
from linktime.api import create_app
from linktime.callbacks import Callback, CallbackAnswer
from linktime.models import sample_event
from linktime.services import account_of_key
from litestar.testing import TestClient
from pydantic import BaseModel, SecretStr

from .conftest import NoSettings, System, registry_with
from .test_dashboard import Dash

SEEN: list[Any] = []


class AcmeCredentials(BaseModel):
    account: str
    token: SecretStr


def use_credentials(ctx: ActionContext) -> Result:
    if ctx.credentials is None:
        return Result.fail("Acme is not connected (Settings → Integrations)", error_code="x")
    SEEN.append(ctx.credentials.token.get_secret_value())
    return Result.ok(external_id=ctx.credentials.account)


def registry() -> plugins.Registry:
    return registry_with(
        ActionType(
            "acme.ping",
            "Ping Acme",
            NoSettings,
            use_credentials,
            credentials=AcmeCredentials,
            integration="acme",
        )
    )


def test_integration_secrets_are_write_only_and_reach_the_action(
    make_system: Callable[..., System],
) -> None:
    system = make_system(registry=registry())
    system.start()
    acc = system.account()
    auth = {"Authorization": f"Bearer {acc.api_key}"}
    system.workflow(acc, [{"action": "acme.ping"}])

    not_connected = system.wait_run(
        acc, system.hub.emit(sample_event(id="e1"), account_id=acc.id).run_ids[0]
    )
    assert not_connected.steps[0].error == "Acme is not connected (Settings → Integrations)"

    with TestClient(create_app(system.hub)) as client:
        assert client.get("/v1/integrations", headers=auth).json()[0]["connected"] is False
        bad = client.put("/v1/integrations/acme", json={"account": "a1"}, headers=auth)
        assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "token"
        r = client.put(
            "/v1/integrations/acme", json={"account": "a1", "token": "tok-s3cret"}, headers=auth
        )
        assert r.status_code == 200
        assert r.json()["settings"] == {"account": "a1", "token": "********"}
        read = client.get("/v1/integrations/acme", headers=auth)
        assert read.status_code == 200 and read.json()["connected"] is True
        assert "tok-s3cret" not in read.text
        assert client.put("/v1/integrations/nope", json={}, headers=auth).status_code == 404
    with system.hub.db.connect() as conn:
        stored = conn.exec_driver_sql("SELECT settings::text FROM integrations").scalar_one()
    assert "tok-s3cret" not in stored

    run = system.wait_run(acc, system.hub.emit(sample_event(id="e2"), account_id=acc.id).run_ids[0])
    assert run.steps[0].external_id == "a1"
    assert SEEN == ["tok-s3cret"]


def test_an_integration_shows_where_its_provider_calls_back(
    make_system: Callable[..., System],
) -> None:
    """The URL to enter in the provider's console (Twilio's "A message comes in" webhook), once
    the server has a public address; it names the account without any API key."""
    reg = registry()
    reg.callbacks["acme"] = Callback(
        "acme",
        lambda request: CallbackAnswer(),
        integration="acme",
        credentials=AcmeCredentials,
        description="Acme reports deliveries here.",
    )
    system = make_system(registry=reg)
    acc = system.account()
    auth = {"Authorization": f"Bearer {acc.api_key}"}
    with TestClient(create_app(system.hub)) as client:
        system.hub.settings.public_url = None
        [off] = client.get("/v1/integrations/acme", headers=auth).json()["callbacks"]
        assert off == {"name": "acme", "url": None, "description": "Acme reports deliveries here."}
        dash = Dash(client)
        dash.sign_in(acc.api_key)
        assert "this server has no public address yet" in dash.get("/settings/integrations").text

        system.hub.settings.public_url = "https://hub.example.com"
        [on] = client.get("/v1/integrations/acme", headers=auth).json()["callbacks"]
        prefix = "https://hub.example.com/v1/callbacks/acme/"
        assert on["url"].startswith(prefix) and acc.api_key not in on["url"]
        key = on["url"].removeprefix(prefix)
        assert account_of_key(system.hub.secret_key(), key) == acc.id
        assert f'value="{on["url"]}"' in dash.get("/settings/integrations").text
