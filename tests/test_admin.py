"""What an operator does to accounts, over PostgreSQL: `linktime accounts list / set-plan` and
the admin API (/v1/admin, its own token). A downgrade pauses the newest active workflows beyond
the new limit (their pending reminders cancelled); an upgrade applies from the next step."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from linktime.accounts import NewAccount, create_account
from linktime.actions import ActionType, Result
from linktime.admin import set_plan
from linktime.api import create_app
from linktime.cli import main
from linktime.storage import Account, Run
from linktime.testing import event_with
from litestar.testing import TestClient
from sqlalchemy import select, update

from .conftest import NoSettings, System, registry_with

TOKEN = "operator-token-for-tests"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
HOOK = {"action": "webhook.call", "settings": {"url": "https://hooks.example.com/in"}}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def admin_api(
    make_system: Callable[..., System], allow_loopback: None
) -> Iterator[tuple[System, TestClient[Any]]]:
    """A hub whose operator set LINKTIME_ADMIN_TOKEN, and a client of its API (no worker:
    nothing here runs a step)."""
    system = make_system(admin_token=TOKEN)
    with TestClient(create_app(system.hub)) as client:
        yield system, client


def cli(system: System, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    """``linktime *args`` as an operator runs it against this system's database."""
    monkeypatch.setenv("LINKTIME_DATABASE_URL", str(system.hub.settings.database_url))
    monkeypatch.setenv("LINKTIME_SECRET_KEY", "test-secret-key")
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def five_workflows(system: System, acc: NewAccount) -> list[str]:
    """Five active workflows, oldest first; the newest is a reminder an hour before a booking
    next year, so it has a run planned."""
    system.hub.emit(
        event_with(start="2027-03-01T15:00:00Z", end="2027-03-01T15:30:00Z"), account_id=acc.id
    )
    made = [system.workflow(acc, [HOOK], name=f"hook {i}") for i in range(4)]
    made.append(
        system.workflow(acc, [HOOK], name="reminder", trigger="meeting.before", offset_minutes=60)
    )
    return made


def runs_of(system: System, workflow_id: str) -> list[str]:
    with system.hub.db.connect() as conn:
        return list(conn.scalars(select(Run.status).where(Run.workflow_id == workflow_id)))


@pytest.mark.parametrize("via", ["cli", "api"])
def test_business_to_free_pauses_all_but_the_three_oldest(
    admin_api: tuple[System, TestClient[Any]], monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    system, client = admin_api
    acc = system.account("business")
    made = five_workflows(system, acc)
    assert runs_of(system, made[4]) == ["scheduled"]

    if via == "cli":
        out = cli(system, monkeypatch, "accounts", "set-plan", acc.id, "free")
        assert out.exit_code == 0, out.output
        assert out.output.splitlines() == [
            f"{acc.id}: business -> free; active workflows 3/3",
            "paused 2 (the newest beyond the free plan's limit):",
            f"  {made[3]}  hook 3",
            f"  {made[4]}  reminder",
        ]
    else:
        r = client.put(f"/v1/admin/accounts/{acc.id}/plan", json={"plan": "free"}, headers=OPERATOR)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "account_id": acc.id,
            "previous_plan": "business",
            "plan": "free",
            "limit": 3,
            "active": 3,
            "paused": [{"id": made[3], "name": "hook 3"}, {"id": made[4], "name": "reminder"}],
        }

    listed = client.get("/v1/workflows", headers=auth(acc.api_key)).json()
    assert {w["id"]: w["enabled"] for w in listed} == {
        made[0]: True,
        made[1]: True,
        made[2]: True,
        made[3]: False,
        made[4]: False,
    }
    reason = "Paused when the plan changed from business to free, which allows 3 active workflows"
    assert [w["paused_reason"] for w in listed] == [None, None, None, reason, reason]
    assert runs_of(system, made[4]) == ["cancelled"]  # as disabling it by hand does
    usage = client.get(f"/v1/admin/accounts/{acc.id}", headers=OPERATOR).json()
    assert (usage["plan"], usage["active"], usage["limit"]) == ("free", 3, 3)
    assert {"action": "sms.send", "capability": "sms", "allowed": False} in usage["actions"]
    assert {"action": "webhook.call", "capability": "webhook", "allowed": True} in usage["actions"]
    # the account's own view agrees
    plan = client.get("/v1/plan", headers=auth(acc.api_key)).json()
    assert (plan["plan"], plan["active"], plan["limit"]) == ("free", 3, 3)

    # room made within the limit, the user enables one again: its pause is over
    client.post(f"/v1/workflows/{made[0]}/disable", headers=auth(acc.api_key))
    enabled = client.post(f"/v1/workflows/{made[3]}/enable", headers=auth(acc.api_key))
    assert enabled.status_code == 200, enabled.text
    assert (enabled.json()["enabled"], enabled.json()["paused_reason"]) == (True, None)
    assert (
        client.get(f"/v1/workflows/{made[0]}", headers=auth(acc.api_key)).json()["paused_reason"]
        is None
    )  # disabled by its user: no plan to blame
    still = client.get(f"/v1/workflows/{made[4]}", headers=auth(acc.api_key)).json()
    assert still["paused_reason"] == reason

    # saved enabled (PUT), the other paused one's pause is over too
    client.post(f"/v1/workflows/{made[1]}/disable", headers=auth(acc.api_key))
    spec = {"name": "reminder", "trigger": "meeting.before", "offset_minutes": 60}
    saved = client.put(
        f"/v1/workflows/{made[4]}",
        json={**spec, "enabled": True, "steps": [HOOK]},
        headers=auth(acc.api_key),
    )
    assert saved.status_code == 200, saved.text
    assert (saved.json()["enabled"], saved.json()["paused_reason"]) == (True, None)


def test_accounts_list_shows_plan_and_usage(
    admin_api: tuple[System, TestClient[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    system, client = admin_api
    free, business = system.account("free"), system.account("business")
    system.workflow(free, [HOOK])
    system.workflow(free, [HOOK], enabled=False)

    out = cli(system, monkeypatch, "accounts", "list")

    assert out.exit_code == 0, out.output
    header, *rows = out.output.splitlines()
    assert header.split() == ["ID", "NAME", "PLAN", "ACTIVE", "CREATED"]
    assert [row.split()[:4] for row in rows] == [
        [free.id, "test", "free", "1/3"],
        [business.id, "test", "business", "0/unlimited"],
    ]
    api = client.get("/v1/admin/accounts", headers=OPERATOR).json()
    assert [(a["id"], a["plan"], a["active"], a["limit"]) for a in api] == [
        (free.id, "free", 1, 3),
        (business.id, "business", 0, None),
    ]


def test_an_account_on_a_plan_no_longer_defined_says_so(
    admin_api: tuple[System, TestClient[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its plan was removed from linktime.toml: it allows nothing, and the listing says why
    rather than showing a bare 0 limit."""
    system, client = admin_api
    defined, gone = system.account("pro"), system.account("pro")
    with system.hub.db.begin() as conn:
        conn.execute(update(Account).where(Account.id == gone.id).values(plan="gold"))

    out = cli(system, monkeypatch, "accounts", "list")

    assert out.exit_code == 0, out.output
    rows = [re.split(r"\s{2,}", row)[:4] for row in out.output.splitlines()[1:]]
    assert rows == [
        [defined.id, "test", "pro", "0/10"],
        [gone.id, "test", "gold (not defined: allows nothing)", "0/0"],
    ]
    api = client.get("/v1/admin/accounts", headers=OPERATOR).json()
    assert [(a["plan"], a["plan_defined"], a["limit"]) for a in api] == [
        ("pro", True, 10),
        ("gold", False, 0),
    ]
    usage = client.get(f"/v1/admin/accounts/{gone.id}", headers=OPERATOR).json()
    assert usage["plan_defined"] is False
    assert not any(a["allowed"] for a in usage["actions"])


def test_names_an_account_controls_reach_the_terminal_escaped(
    admin_api: tuple[System, TestClient[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ANSI escape or a newline in a name cannot recolour the operator's terminal or forge
    a line of `linktime accounts` output."""
    system, _ = admin_api
    forged = "shop\x1b[2K\rpaused 0\nacc_fake: business -> business"
    acc = create_account(system.hub, forged, "pro")
    for i in range(3):  # free keeps three
        system.workflow(acc, [HOOK], name=f"keep {i}")
    paused = system.workflow(acc, [HOOK], name=forged)

    listed = cli(system, monkeypatch, "accounts", "list")
    moved = cli(system, monkeypatch, "accounts", "set-plan", acc.id, "free")

    shown = "shop\\x1b[2K\\rpaused 0\\nacc_fake: business -> business"
    for out in (listed, moved):
        assert out.exit_code == 0, out.output
        assert "\x1b" not in out.output and "\r" not in out.output
    assert len(listed.output.splitlines()) == 2
    assert listed.output.splitlines()[1].split("  ")[1] == shown
    assert moved.output.splitlines()[-1] == f"  {paused}  {shown}"
    assert len(moved.output.splitlines()) == 3


def test_admin_api_takes_only_the_operator_token(
    admin_api: tuple[System, TestClient[Any]],
) -> None:
    system, client = admin_api
    acc = system.account("business")
    for headers in (auth(acc.api_key), {"Authorization": "Bearer not-the-token"}, {}):
        r = client.get("/v1/admin/accounts", headers=headers)
        assert r.status_code == 401
        assert r.json()["error"] == "unauthorized"
        r = client.put(f"/v1/admin/accounts/{acc.id}/plan", json={"plan": "free"}, headers=headers)
        assert r.status_code == 401
    # the operator token is no account key either
    assert client.get("/v1/workflows", headers=OPERATOR).status_code == 401
    assert client.get(f"/v1/admin/accounts/{acc.id}", headers=OPERATOR).json()["plan"] == (
        "business"
    )


def test_admin_api_is_off_without_a_token(running_api: tuple[System, TestClient[Any]]) -> None:
    system, client = running_api
    acc = system.account("business")
    for headers in (OPERATOR, auth(acc.api_key), {"Authorization": "Bearer "}):
        r = client.get("/v1/admin/accounts", headers=headers)
        assert r.status_code == 404
        assert "LINKTIME_ADMIN_TOKEN" in r.json()["message"]


@pytest.mark.parametrize("path", ["/v1/admin/accounts", "/metrics"])
def test_both_operator_routes_refuse_an_empty_bearer(
    admin_api: tuple[System, TestClient[Any]], path: str
) -> None:
    _, client = admin_api
    for header in ("Bearer ", "Bearer", "bearer   ", f"Basic {TOKEN}"):
        assert client.get(path, headers={"Authorization": header}).status_code == 401, header
    assert client.get(path, headers=OPERATOR).status_code == 200


def test_an_empty_admin_token_is_no_token_on_both_operator_routes(
    make_system: Callable[..., System],
) -> None:
    """LINKTIME_ADMIN_TOKEN= (blank) is unset: the admin API is off and /metrics is open, as
    without the variable."""
    system = make_system(admin_token="  ")
    assert system.hub.settings.admin_token is None
    with TestClient(create_app(system.hub)) as client:
        empty = {"Authorization": "Bearer "}
        assert client.get("/v1/admin/accounts", headers=empty).status_code == 404
        assert client.get("/metrics").status_code == 200


def test_bad_plan_changes_are_named(
    admin_api: tuple[System, TestClient[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    system, client = admin_api
    acc = system.account("pro")
    url = f"/v1/admin/accounts/{acc.id}/plan"

    r = client.put(url, json={"plan": "gold"}, headers=OPERATOR)
    assert r.status_code == 422
    assert r.json()["fields"] == [
        {
            "field": "plan",
            "message": "unknown plan 'gold'; the operator's plans: free, pro, business",
        }
    ]
    for body in ({"plan": 3}, {}, {"plan": "free", "extra": 1}):
        r = client.put(url, json=body, headers=OPERATOR)
        assert r.status_code == 422, body
        assert r.json()["fields"][0]["field"] in ("plan", "extra")
    r = client.put("/v1/admin/accounts/acc_nope/plan", json={"plan": "free"}, headers=OPERATOR)
    assert (r.status_code, r.json()["error"]) == (404, "not_found")
    assert client.get("/v1/admin/accounts/acc_nope", headers=OPERATOR).status_code == 404

    # A huge name is refused by its length, and never echoed whole.
    r = client.put(url, json={"plan": "a" * 3_000_000}, headers=OPERATOR)
    assert r.status_code == 422
    assert r.json()["fields"] == [
        {"field": "plan", "message": "String should have at most 64 characters"}
    ]
    out = cli(system, monkeypatch, "accounts", "set-plan", acc.id, "gold")
    assert out.exit_code == 1
    assert "unknown plan 'gold'; the operator's plans: free, pro, business" in out.output
    out = cli(system, monkeypatch, "accounts", "set-plan", acc.id, "a" * 100_000)
    assert out.exit_code == 1
    assert f"unknown plan '{'a' * 64}'…; the operator's plans" in out.output
    assert len(out.output) < 200
    out = cli(system, monkeypatch, "accounts", "set-plan", "acc_nope", "free")
    assert (out.exit_code, out.output.strip()) == (1, "Error: no account 'acc_nope'")
    assert client.get(f"/v1/admin/accounts/{acc.id}", headers=OPERATOR).json()["plan"] == "pro"


def test_a_plan_only_in_linktime_toml_is_assignable(
    make_system: Callable[..., System], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "linktime.toml"
    config.write_text(
        "[plans.free]\nactive_workflows = 3\ncapabilities = ['email', 'webhook']\n"
        "[plans.team]\nactive_workflows = 2\ncapabilities = ['*']\n"
    )
    monkeypatch.setenv("LINKTIME_CONFIG", str(config))
    system = make_system()
    acc = system.account("free")
    made = [system.workflow(acc, [HOOK], name=f"w{i}") for i in range(3)]

    out = cli(system, monkeypatch, "accounts", "set-plan", acc.id, "team")

    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[0] == f"{acc.id}: free -> team; active workflows 2/2"
    assert out.output.splitlines()[2] == f"  {made[2]}  w2"
    out = cli(system, monkeypatch, "accounts", "set-plan", acc.id, "business")
    assert "unknown plan 'business'; the operator's plans: free, team" in out.output


def test_an_upgrade_applies_from_the_next_step(
    make_system: Callable[..., System], allow_loopback: None
) -> None:
    """An SMS step blocked on free runs once the account is on pro: on replay and on the next
    event. The engine reads the plan for each step; nothing else has to change."""
    sent: list[str] = []

    def send(ctx: Any) -> Result:
        sent.append(ctx.event.id)
        return Result.ok()

    texting = ActionType("test.sms", "Text", NoSettings, send, capability="sms")
    system = make_system(registry=registry_with(texting))
    system.start()
    acc = system.account("pro")
    system.workflow(acc, [{"action": "test.sms"}])
    set_plan(system.hub, acc.id, "free")

    blocked = system.hub.emit(event_with(), account_id=acc.id).run_ids[0]
    run = system.wait_run(acc, blocked)
    assert (run.status, run.steps[0].status) == ("failed", "blocked_by_plan")

    assert set_plan(system.hub, acc.id, "pro").paused == []
    with TestClient(create_app(system.hub)) as client:
        replay = client.post(f"/v1/runs/{blocked}/replay", headers=auth(acc.api_key))
    assert replay.status_code == 201
    assert system.wait_run(acc, replay.json()["id"]).status == "succeeded"
    nxt = system.hub.emit(event_with().model_copy(update={"id": "evt_next"}), account_id=acc.id)
    assert system.wait_run(acc, nxt.run_ids[0]).status == "succeeded"
    assert sent == ["evt_sample", "evt_next"]


def test_schema_documents_the_admin_token(admin_api: tuple[System, TestClient[Any]]) -> None:
    _, client = admin_api
    schema = client.get("/schema/openapi.json").json()
    assert schema["components"]["securitySchemes"]["admin_token"]["scheme"] == "bearer"
    for method, path in (
        ("get", "/v1/admin/accounts"),
        ("get", "/v1/admin/accounts/{id}"),
        ("put", "/v1/admin/accounts/{id}/plan"),
    ):
        assert schema["paths"][path][method]["security"] == [{"admin_token": []}]
    assert schema["paths"]["/v1/workflows"]["get"].get("security") is None  # the account key
