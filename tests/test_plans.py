"""Plans, event-type filters, templates, test runs and the event inspector, over PostgreSQL."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from linktime.models import sample_event
from linktime.storage import Account, Workflow
from linktime.testing import HttpReceiver
from litestar.testing import TestClient
from sqlalchemy import update

from .conftest import NoSettings, System, registry_with
from .procs import LINKTIME, clean_env

SMS = {"action": "sms.send", "settings": {"to": "invitee", "text": "See you {{ event_time }}"}}


def hook(url: str) -> dict[str, Any]:
    return {"action": "webhook.call", "settings": {"url": url}}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def body(name: str, steps: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {"name": name, "trigger": "booking.created", "steps": steps, **kw}


def test_free_plan_allows_three_active_workflows(
    running_api: tuple[System, TestClient[Any]],
) -> None:
    system, client = running_api
    key = system.account("free").api_key
    for i in range(3):
        r = client.post(
            "/v1/workflows",
            json=body(f"w{i}", [hook("https://x.io")], enabled=True),
            headers=auth(key),
        )
        assert r.status_code == 201
    fourth = client.post(
        "/v1/workflows", json=body("w3", [hook("https://x.io")], enabled=True), headers=auth(key)
    )
    assert fourth.status_code == 403
    assert fourth.json()["message"] == "the free plan allows 3 active workflows; 3 are active"
    disabled = client.post(
        "/v1/workflows", json=body("w3", [hook("https://x.io")]), headers=auth(key)
    ).json()
    r = client.post(f"/v1/workflows/{disabled['id']}/enable", headers=auth(key))
    assert r.status_code == 403 and r.json()["fields"][0]["field"] == "enabled"
    usage = client.get("/v1/plan", headers=auth(key)).json()
    assert (usage["plan"], usage["active"], usage["limit"]) == ("free", 3, 3)


def test_sms_needs_pro_and_voice_needs_business(
    running_api: tuple[System, TestClient[Any]],
) -> None:
    system, client = running_api
    free, pro = system.account("free").api_key, system.account("pro").api_key
    r = client.post("/v1/workflows", json=body("sms", [SMS]), headers=auth(free))
    assert r.status_code == 403
    assert r.json()["fields"] == [
        {
            "field": "steps.0.action",
            "message": "the free plan does not include sms.send (capability sms)",
        }
    ]
    assert (
        client.post("/v1/workflows", json=body("sms", [SMS]), headers=auth(pro)).status_code == 201
    )
    voice = {"action": "voice.call", "settings": {"to": "invitee", "script": "Hi"}}
    r = client.post("/v1/workflows", json=body("call", [voice]), headers=auth(pro))
    assert r.status_code == 403 and "capability voice" in r.json()["fields"][0]["message"]


def test_six_actions_are_refused_on_every_plan(running_api: tuple[System, TestClient[Any]]) -> None:
    system, client = running_api
    key = system.account("business").api_key
    r = client.post(
        "/v1/workflows", json=body("six", [hook("https://x.io")] * 6), headers=auth(key)
    )
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "steps"


@pytest.mark.parametrize("go_on", [False, True])
def test_downgraded_account_step_is_blocked_by_plan_at_run_time(
    running_api: tuple[System, TestClient[Any]], http_receiver: HttpReceiver, go_on: bool
) -> None:
    system, _ = running_api
    acc = system.account("pro")
    system.workflow(acc, [SMS, hook(http_receiver.url + "/after")], continue_when_blocked=go_on)
    with system.hub.db.begin() as conn:
        conn.execute(update(Account).where(Account.id == acc.id).values(plan="free"))

    run = system.wait_run(acc, system.hub.emit(sample_event(), account_id=acc.id).run_ids[0])

    sms, after = run.steps
    assert sms.status == "blocked_by_plan"
    assert sms.attempt_log[0].error == "the free plan does not include sms.send (capability sms)"
    if go_on:
        assert (run.status, after.status) == ("succeeded", "succeeded")
        assert [r.path for r in http_receiver.wait_for(1)] == ["/after"]
    else:
        assert (run.status, after.status) == ("failed", "skipped")
        assert http_receiver.requests == []


def test_operator_file_changes_plans_and_templates(tmp_path: Path) -> None:
    config = tmp_path / "linktime.toml"
    config.write_text(
        """
[plans.free]
active_workflows = 3
capabilities = ["email", "slack", "webhook", "sms"]
[plans.pro]
active_workflows = 10
capabilities = ["email", "slack", "webhook", "sms"]
[plans.business]
capabilities = ["email", "webhook", "sms", "voice"]
"""
    )
    env = clean_env(LINKTIME_CONFIG=str(config), LINKTIME_DATA_DIR=str(tmp_path / "data"))
    table = subprocess.run(
        [LINKTIME, "plans"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "sms.send" in table and table.split("sms.send")[1].split()[:3] == ["yes"] * 3
    assert table.split("slack.post")[1].split()[:3] == ["yes", "yes", "-"]
    assert "unlimited" in table

    script = tmp_path / "check.py"
    script.write_text(
        """
import json, sys
from litestar.testing import TestClient
from linktime.accounts import create_account
from linktime.api import create_app
from linktime.engine import Hub
hub = Hub(); hub.migrate()
free, biz = (create_account(hub, "a", p).api_key for p in ("free", "business"))
h = lambda k: {"Authorization": f"Bearer {k}"}
sms = {"name": "s", "trigger": "booking.created",
       "steps": [{"action": "sms.send", "settings": {"to": "invitee", "text": "hi"}}]}
slack = {"name": "s", "trigger": "booking.created",
         "steps": [{"action": "slack.post", "settings": {"channel": "#x", "text": "hi"}}]}
with TestClient(create_app(hub)) as c:
    out = {"free_sms": c.post("/v1/workflows", json=sms, headers=h(free)).status_code,
           "biz_slack": c.post("/v1/workflows", json=slack, headers=h(biz)).status_code,
           "biz_templates": [t["name"] for t in c.get("/v1/templates", headers=h(biz)).json()],
           "free_templates": [t["name"] for t in c.get("/v1/templates", headers=h(free)).json()]}
print(json.dumps(out))
"""
    )
    import json

    out = json.loads(
        subprocess.run(
            [str(Path(LINKTIME).parent / "python"), str(script)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert out["free_sms"] == 201 and out["biz_slack"] == 403
    assert "team-notification" not in out["biz_templates"]
    assert "team-notification" in out["free_templates"]
    assert "meeting-reminder" in out["free_templates"]  # SMS moved to free


def test_each_template_creates_an_editable_workflow(
    running_api: tuple[System, TestClient[Any]],
) -> None:
    system, client = running_api
    key = system.account("business").api_key
    templates = client.get("/v1/templates", headers=auth(key)).json()
    names = {t["name"] for t in templates}
    assert {
        "thank-you-email",
        "payment-confirmation",
        "cancellation-follow-up",
        "post-meeting-survey",
        "team-notification",
        "meeting-reminder",
    } <= names
    for t in templates:
        r = client.post(f"/v1/templates/{t['name']}/workflows", headers=auth(key))
        assert r.status_code == 201, r.text
        wf = r.json()
        assert (wf["trigger"], wf["enabled"]) == (t["trigger"], False)
        preview = client.post(
            f"/v1/workflows/{wf['id']}/test", json={"mode": "dry_run"}, headers=auth(key)
        ).json()
        assert all(s["error"] is None for s in preview["steps"]), preview
    free = system.account("free").api_key
    assert (
        client.post("/v1/templates/meeting-reminder/workflows", headers=auth(free)).status_code
        == 404
    )


def test_dry_run_sends_nothing_and_shows_the_rendered_output(
    running_api: tuple[System, TestClient[Any]], http_receiver: HttpReceiver
) -> None:
    system, client = running_api
    key = system.account("business").api_key
    email = {
        "action": "email.send",
        "settings": {
            "to_invitee": True,
            "subject": "See you, {{ attendee_first_name }}",
            "text": "{{ event_name }} at {{ event_time }}",
        },
    }
    wf = client.post(
        "/v1/workflows", json=body("t", [email, hook(http_receiver.url)]), headers=auth(key)
    ).json()

    r = client.post(f"/v1/workflows/{wf['id']}/test", json={"mode": "dry_run"}, headers=auth(key))

    assert r.status_code == 200
    first, second = r.json()["steps"]
    assert first["output"]["subject"] == "See you, Grace"
    assert first["output"]["text"] == "Intro call between Ada Lovelace and Grace Hopper at 10:00 AM"
    assert second["output"]["body"]["data"]["booking"]["uid"] == "bk_sample"
    system.settle()  # a run the dry run had started would have been executed by now
    assert http_receiver.requests == []


def test_live_test_reaches_the_test_recipient_marked_as_a_test(
    running_api: tuple[System, TestClient[Any]], http_receiver: HttpReceiver
) -> None:
    system, client = running_api
    acc = system.account("free")
    wf = client.post(
        "/v1/workflows", json=body("t", [hook(http_receiver.url)]), headers=auth(acc.api_key)
    ).json()
    r = client.post(
        f"/v1/workflows/{wf['id']}/test",
        json={"mode": "live", "recipients": {"email": "qa@example.com"}},
        headers=auth(acc.api_key),
    )
    assert r.status_code == 200
    run = system.wait_run(acc, r.json()["run_id"])
    assert run.status == "succeeded" and run.test is True
    sent = http_receiver.wait_for(1)[0].json()
    assert sent["data"]["booking"]["invitee"]["email"] == "qa@example.com"
    listed = client.get(f"/v1/runs?workflow_id={wf['id']}", headers=auth(acc.api_key)).json()
    assert [(x["id"], x["test"]) for x in listed] == [(run.id, True)]


def test_event_types_and_the_inspector_say_why_a_workflow_did_not_fire(
    running_api: tuple[System, TestClient[Any]], http_receiver: HttpReceiver
) -> None:
    system, client = running_api
    acc = system.account("free")
    h = auth(acc.api_key)
    only_a = client.post(
        "/v1/workflows",
        json=body("A only", [hook(http_receiver.url + "/a")], enabled=True, event_types=["type-a"]),
        headers=h,
    ).json()
    everyone = client.post(
        "/v1/workflows",
        json=body("all", [hook(http_receiver.url + "/all")], enabled=True),
        headers=h,
    ).json()
    off = client.post(
        "/v1/workflows", json=body("off", [hook(http_receiver.url)]), headers=h
    ).json()
    cancel = client.post(
        "/v1/workflows",
        json={
            **body("c", [hook(http_receiver.url)]),
            "trigger": "booking.cancelled",
            "enabled": True,
        },
        headers=h,
    ).json()

    event = sample_event(id="evt_b").model_dump(mode="json")
    event["booking"]["event_type"] = {"id": "et_b", "slug": "type-b", "title": "B"}
    client.post("/v1/events", json=event, headers=h)
    seen = client.get("/v1/events/evt_b", headers=h).json()

    reasons = {d["workflow_id"]: d["reason"] for d in seen["decisions"]}
    assert reasons[only_a["id"]] == "limited to event types type-a; this booking's is type-b"
    assert reasons[everyone["id"]] is None
    assert reasons[off["id"]] == "the workflow is disabled"
    assert (
        reasons[cancel["id"]] == "its trigger is booking.cancelled; this event is booking.created"
    )
    ran = {d["workflow_id"]: d["run_id"] for d in seen["decisions"]}
    system.wait_run(acc, ran[everyone["id"]])
    system.settle()  # and so would a run of a workflow that was not to fire
    assert [r.path for r in http_receiver.requests] == ["/all"]
    assert client.get("/v1/events/evt_b", headers=auth(system.account().api_key)).status_code == 404


def test_replaying_a_failed_run_resumes_from_the_failed_step(
    running_api: tuple[System, TestClient[Any]], http_receiver: HttpReceiver
) -> None:
    from linktime.testing import Reply

    system, client = running_api
    acc = system.account("free")
    http_receiver.script("/second", Reply(404))
    system.workflow(acc, [hook(http_receiver.url + "/first"), hook(http_receiver.url + "/second")])
    failed = system.wait_run(acc, system.hub.emit(sample_event(), account_id=acc.id).run_ids[0])
    assert failed.status == "failed"

    r = client.post(f"/v1/runs/{failed.id}/replay", headers=auth(acc.api_key))
    assert r.status_code == 201, r.text
    again = system.wait_run(acc, r.json()["id"])
    assert again.status == "succeeded" and [s.action for s in again.steps] == ["webhook.call"]
    assert [r.path for r in http_receiver.requests] == ["/first", "/second", "/second"]
    again_again = client.post(f"/v1/runs/{again.id}/replay", headers=auth(acc.api_key))
    assert again_again.status_code == 409


def test_inspector_names_plan_limit_and_missing_plugin(
    make_system: Callable[..., System], allow_loopback: None, http_receiver: HttpReceiver
) -> None:
    from linktime.actions import ActionType, Result
    from linktime.engine import Hub
    from linktime.runs import inspect_event

    fax_send = ActionType("fax.send", "Fax", NoSettings, lambda ctx: Result.ok())
    system = make_system(registry=registry_with(fax_send, load=None))
    acc = system.account("pro")
    hooks = [system.workflow(acc, [hook(http_receiver.url)], name=f"w{i}") for i in range(3)]
    fax = system.workflow(acc, [{"action": "fax.send"}], name="fax")
    with system.hub.db.begin() as conn:  # downgraded: 4 active workflows on a plan of 3
        conn.execute(update(Account).where(Account.id == acc.id).values(plan="free"))

    # the same installation, restarted without the fax plugin
    without_fax = Hub(system.hub.settings)
    without_fax.emit(sample_event(id="evt_limits"), account_id=acc.id)
    reasons = {
        d.workflow_id: d.reason for d in inspect_event(without_fax, acc.id, "evt_limits").decisions
    }
    without_fax.close()

    assert [reasons[w] for w in hooks] == [None, None, None]
    assert reasons[fax] == "action fax.send is not installed"

    fourth = system.workflow(acc, [hook(http_receiver.url)], name="w3", enabled=False)
    with system.hub.db.begin() as conn:
        conn.execute(update(Workflow).where(Workflow.id.in_([fourth])).values(enabled=True))
    system.hub.emit(sample_event(id="evt_limits2"), account_id=acc.id)
    later = {
        d.workflow_id: d.reason for d in inspect_event(system.hub, acc.id, "evt_limits2").decisions
    }
    assert later[fourth] == (
        "the free plan allows 3 active workflows; this one is beyond the limit"
    )


def test_cli_dry_runs_a_workflow(tmp_path: Path) -> None:
    import json

    env = clean_env(LINKTIME_DATA_DIR=str(tmp_path / "data"))
    key = subprocess.run(
        [LINKTIME, "accounts", "create", "--plan", "free"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    script = tmp_path / "wf.py"
    script.write_text(
        "import sys\n"
        "from linktime.accounts import authenticate\n"
        "from linktime.engine import Hub\n"
        "from linktime import workflows\n"
        "hub = Hub()\n"
        "acc = authenticate(hub, sys.argv[1])\n"
        "spec = workflows.WorkflowIn(name='w', trigger='booking.created', steps=[{'action': "
        "'email.send', 'settings': {'to_invitee': True, 'subject': 'Hi {{ attendee_name }}', "
        "'text': 'x'}}])\n"
        "print(workflows.create(hub, acc, spec)[0].id)\n"
    )
    wf_id = subprocess.run(
        [str(Path(LINKTIME).parent / "python"), str(script), key],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    out = subprocess.run(
        [LINKTIME, "workflows", "test", wf_id], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out)["steps"][0]["output"]["subject"] == "Hi Grace Hopper"
    missing = subprocess.run(
        [LINKTIME, "workflows", "test", "wf_nope"], env=env, capture_output=True, text=True
    )
    assert missing.returncode != 0 and "no workflow 'wf_nope'" in missing.stderr
    wrong = subprocess.run(
        [LINKTIME, "workflows", "test", wf_id, "--live", "--email", "nope"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 1
    assert "--email: Enter an email address like you@example.com." in wrong.stderr
    assert "Traceback" not in wrong.stderr
