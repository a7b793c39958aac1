"""SMS credits (issue 13, item 4): ``sms.send`` through the official twilio client against the
stand-in Twilio on loopback takes one credit a segment before it sends, once across retries,
gives them back when the step ends unsent, and is blocked by plan at zero; two workers racing
for the last credits send exactly one message. The month's count in GET /v1/plan, the operator
API, ``linktime plans``, the Account page and the Test panel."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from linktime import credits, integrations, workflows
from linktime.accounts import NewAccount, create_account
from linktime.actions import ActionType, Result
from linktime.api import create_app
from linktime.engine import Hub
from linktime.models import BookingEvent, sample_event
from linktime.plans import DEFAULT_PLANS, PlanConfig
from linktime.runs import get_run
from linktime.segments import sms_count
from linktime.services import StepServices
from linktime.settings import Settings
from linktime.storage import CreditCharge, CreditUsage
from linktime_twilio_testing import MESSAGES, FakeTwilio, credentials, twilio
from litestar.testing import TestClient
from sqlalchemy import select

from .conftest import Clock, NoSettings, fast_settings, registry_with
from .procs import LINKTIME, clean_env
from .test_dashboard import Dash

__all__ = ["credentials", "twilio"]  # fixtures

T0 = datetime(2026, 12, 30, 10, 0, tzinfo=UTC)
SHORT = "Your intro call is tomorrow at 10:00."
# 200 GSM-7 characters: two segments of 153.
LONG = ("See you tomorrow at 10:00 for the intro call. " * 5)[:200]
ADMIN_TOKEN = "operator-token-for-credits-tests"


def after_sms(ctx: Any) -> Result:
    return Result.ok(external_id="noted")


AFTER = ActionType("test.after", "A step after the SMS", NoSettings, after_sms)


@dataclass
class Texting:
    """A hub, its clock, and a Pro account with Twilio connected (the stand-in)."""

    hub: Hub
    clock: Clock
    twilio: FakeTwilio
    account: NewAccount

    def workflow(
        self, *texts: str, after: bool = False, continue_when_blocked: bool = False
    ) -> str:
        steps: list[dict[str, Any]] = [
            {"action": "sms.send", "settings": {"to": "invitee", "text": t}} for t in texts
        ]
        if after:
            steps.append({"action": AFTER.name, "settings": {}})
        spec = workflows.WorkflowIn(
            name=f"text {len(texts)}",
            trigger="booking.created",
            enabled=True,
            continue_when_blocked=continue_when_blocked,
            steps=steps,
        )
        created, _ = workflows.create(self.hub, self.account.id, spec)
        return created.id

    def emit(self, n: int = 1) -> list[str]:
        """Runs of every enabled workflow for a new booking."""
        event = booking(n)
        return list(self.hub.emit(event, account_id=self.account.id).run_ids)

    def drive(self, run_id: str, *, started: bool = False) -> Any:
        """Process the run (unless ``started``), its retries coming due as the clock moves on,
        until it ends."""
        if not started:
            self.hub.process_run(run_id)
        for _ in range(10):
            run = get_run(self.hub, self.account.id, run_id)
            if run.status in ("succeeded", "failed"):
                return run
            self.clock.advance(seconds=1)
            for due in self.hub.due_runs():
                self.hub.process_run(due)
        raise AssertionError(f"run {run_id} did not end")

    def used(self) -> credits.Credits:
        return credits.sms_usage(self.hub, self.account.id)

    def messages(self) -> list[Any]:
        """The requests that asked the stand-in to send a message."""
        return [r for r in self.twilio.receiver.requests if r.path.startswith(MESSAGES)]


def booking(n: int) -> BookingEvent:
    return sample_event().model_copy(update={"id": f"evt_credits_{n}"})


def with_sms_credits(allowance: int | None) -> dict[str, PlanConfig]:
    return {
        **DEFAULT_PLANS,
        "pro": DEFAULT_PLANS["pro"].model_copy(update={"sms_credits": allowance}),
    }


@pytest.fixture
def texting(
    tmp_path: Path, twilio: FakeTwilio, credentials: dict[str, str]
) -> Iterator[Callable[..., Texting]]:
    hubs: list[Hub] = []

    def make(allowance: int | None = 500, database_url: str | None = None) -> Texting:
        clock = Clock(T0)
        settings = fast_settings(
            data_dir=tmp_path,
            database_url=database_url,
            plans=with_sms_credits(allowance),
            admin_token=ADMIN_TOKEN,
        )
        hub = Hub(settings, registry=registry_with(AFTER, load=None), clock=clock)
        hub.migrate()
        hubs.append(hub)
        account = create_account(hub, "Acme", "pro")
        integrations.connect(hub, account.id, "twilio", credentials)
        return Texting(hub, clock, twilio, account)

    yield make
    for hub in hubs:
        hub.close()


def test_the_texts_cost_what_they_are_sent_as() -> None:
    assert [sms_count(t).segments for t in (SHORT, LONG, "🙂" * 40)] == [1, 2, 2]


# --- taking and giving back ----------------------------------------------------------------------


def test_at_zero_credits_the_step_is_blocked_and_twilio_is_not_asked(
    texting: Callable[..., Texting],
) -> None:
    t = texting(allowance=0)
    t.workflow(SHORT, after=True)
    t.workflow(SHORT, after=True, continue_when_blocked=True)
    stopped, went_on = (t.drive(r) for r in t.emit())

    for run in (stopped, went_on):
        step = run.steps[0]
        assert (step.status, step.error_code) == ("blocked_by_plan", "sms_credits_exhausted")
        assert step.error is not None
        assert "no SMS credits are left this month" in step.error
        assert "this text needs 1" in step.error
    # Later steps run only when the workflow continues when blocked.
    assert [s.status for s in stopped.steps] == ["blocked_by_plan", "skipped"]
    assert [s.status for s in went_on.steps] == ["blocked_by_plan", "succeeded"]
    assert t.messages() == [] and t.twilio.sent == []
    assert (t.used().used, t.used().left) == (0, 0)


def test_credits_are_taken_once_across_retries(texting: Callable[..., Texting]) -> None:
    t = texting()
    t.workflow(LONG)
    t.twilio.fail_next(t.twilio.error(500, 20500, "Internal Server Error"))
    [run_id] = t.emit()
    t.hub.process_run(run_id)
    # Waiting for its retry, the step keeps what it took.
    assert get_run(t.hub, t.account.id, run_id).steps[0].status == "pending"
    assert t.used().used == 2

    run = t.drive(run_id, started=True)

    [step] = run.steps
    assert step.status == "succeeded" and step.attempts == 2
    assert len(t.messages()) == 2 and len(t.twilio.sent) == 1
    assert (t.used().used, t.used().left) == (2, 498)


def test_credits_come_back_when_twilio_refuses(texting: Callable[..., Texting]) -> None:
    t = texting()
    t.workflow(LONG)
    t.twilio.fail_next(t.twilio.error(400, 21211, "The 'To' number is not a valid phone number."))

    run = t.drive(t.emit()[0])

    assert (run.steps[0].status, run.steps[0].error_code) == ("failed", "twilio_21211")
    assert len(t.messages()) == 1 and t.twilio.sent == []
    assert t.used().used == 0
    with t.hub.db.connect() as conn:
        assert conn.scalars(select(CreditCharge.step_id)).all() == []


def test_a_step_waiting_to_retry_gives_its_credits_back_when_its_run_is_cancelled(
    texting: Callable[..., Texting],
) -> None:
    t = texting()
    wf = t.workflow(SHORT, LONG)
    t.twilio.fail_next(t.twilio.error(500, 20500, "Internal Server Error"))  # the first text
    [run_id] = t.emit()
    t.hub.process_run(run_id)
    assert [s.status for s in get_run(t.hub, t.account.id, run_id).steps] == ["pending"] * 2
    assert t.used().used == 1

    # Deleting the workflow cancels its pending runs (as a cancelled booking does reminders).
    workflows.delete(t.hub, t.account.id, wf)

    run = get_run(t.hub, t.account.id, run_id)
    assert (run.status, [s.status for s in run.steps]) == ("cancelled", ["skipped"] * 2)
    assert t.used().used == 0 and t.twilio.sent == []


def test_each_text_costs_its_segments(texting: Callable[..., Texting]) -> None:
    t = texting()
    t.workflow(SHORT, LONG, "🙂" * 40)

    run = t.drive(t.emit()[0])

    assert [s.status for s in run.steps] == ["succeeded"] * 3
    assert (t.used().used, t.used().left) == (5, 495)
    with t.hub.db.connect() as conn:
        charged = conn.scalars(select(CreditCharge.amount).order_by(CreditCharge.created_at))
        assert sorted(charged) == [1, 2, 2]


def test_credits_are_counted_per_month(texting: Callable[..., Texting]) -> None:
    t = texting(allowance=3)
    t.workflow(LONG)
    assert t.drive(t.emit(1)[0]).steps[0].status == "succeeded"
    assert t.drive(t.emit(2)[0]).steps[0].error_code == "sms_credits_exhausted"
    december = t.used()
    assert (december.period, december.used, december.left) == ("2026-12", 2, 1)
    assert december.renews_on.isoformat() == "2027-01-01"

    t.clock.now = datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert (t.used().period, t.used().used, t.used().left) == ("2027-01", 0, 3)
    assert t.drive(t.emit(3)[0]).steps[0].status == "succeeded"
    assert (t.used().used, t.used().left) == (2, 1)
    with t.hub.db.connect() as conn:
        months = conn.execute(select(CreditUsage.period, CreditUsage.used).order_by("period"))
        assert [tuple(m) for m in months] == [("2026-12", 2), ("2027-01", 2)]
    assert len(t.twilio.sent) == 2


# --- the race ------------------------------------------------------------------------------------


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_workers_racing_for_the_last_credits_send_one(
    texting: Callable[..., Texting],
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    database: str,
) -> None:
    """3 credits left, two 2-segment texts executed by two workers at once: both reach the
    moment they take their credits together (a barrier), exactly one is sent."""
    url = request.getfixturevalue("pg_url") if database == "postgresql" else None
    t = texting(allowance=3, database_url=url)
    t.workflow(LONG)
    t.workflow(LONG)
    first, second = t.emit()
    together = threading.Barrier(2, timeout=20)
    take = StepServices.take_credits

    def take_together(self: StepServices, kind: str, amount: int) -> bool:
        together.wait()  # both workers are about to take: release them at once
        return take(self, kind, amount)

    monkeypatch.setattr(StepServices, "take_credits", take_together)
    failures: list[BaseException] = []

    def worker(run_id: str) -> None:
        try:
            t.hub.process_run(run_id)
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(r,)) for r in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures and not any(thread.is_alive() for thread in threads)

    steps = [get_run(t.hub, t.account.id, r).steps[0] for r in (first, second)]
    assert sorted((s.status, s.error_code) for s in steps) == [
        ("blocked_by_plan", "sms_credits_exhausted"),
        ("succeeded", None),
    ]
    assert len(t.messages()) == 1 and len(t.twilio.sent) == 1
    [sent] = [s for s in steps if s.status == "succeeded"]
    assert sent.external_id == t.twilio.sent[0].sid
    with t.hub.db.connect() as conn:
        assert conn.scalars(select(CreditCharge.amount)).all() == [2]
    assert (t.used().used, t.used().left) == (2, 1)


# --- where the numbers show ----------------------------------------------------------------------


def test_the_plan_api_and_the_operator_show_the_months_credits(
    texting: Callable[..., Texting],
) -> None:
    t = texting()
    t.workflow(LONG)
    t.drive(t.emit()[0])
    free = create_account(t.hub, "Free", "free")
    expected = {
        "used": 2,
        "allowance": 500,
        "left": 498,
        "period": "2026-12",
        "renews_on": "2027-01-01",
    }
    with TestClient(create_app(t.hub)) as client:
        mine = client.get("/v1/plan", headers={"Authorization": f"Bearer {t.account.api_key}"})
        theirs = client.get("/v1/plan", headers={"Authorization": f"Bearer {free.api_key}"})
        operator = client.get(
            f"/v1/admin/accounts/{t.account.id}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert mine.status_code == 200 and mine.json()["sms_credits"] == expected
    assert theirs.json()["sms_credits"] == {**expected, "used": 0, "allowance": 0, "left": 0}
    assert operator.status_code == 200 and operator.json()["sms_credits"] == expected


def test_an_unlimited_plan_shows_null(texting: Callable[..., Texting]) -> None:
    t = texting(allowance=None)
    t.workflow(LONG)
    assert t.drive(t.emit()[0]).steps[0].status == "succeeded"
    with TestClient(create_app(t.hub)) as client:
        shown = client.get(
            "/v1/plan", headers={"Authorization": f"Bearer {t.account.api_key}"}
        ).json()["sms_credits"]
    assert (shown["used"], shown["allowance"], shown["left"]) == (2, None, None)


def test_the_operator_sets_each_plans_credits_in_linktime_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "linktime.toml"
    config.write_text(
        """
[plans.free]
active_workflows = 3
capabilities = ["email", "sms"]
sms_credits = 50
[plans.pro]
capabilities = ["email", "sms"]
"""
    )
    monkeypatch.setenv("LINKTIME_CONFIG", str(config))
    settings = Settings(data_dir=tmp_path)
    assert (settings.plan("free").sms_credits, settings.plan("pro").sms_credits) == (50, None)

    env = clean_env(LINKTIME_CONFIG=str(config), LINKTIME_DATA_DIR=str(tmp_path / "data"))
    table = subprocess.run(
        [LINKTIME, "plans"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert table.split("sms credits a month")[1].split()[:2] == ["50", "unlimited"]


def test_the_default_plans_have_their_credits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINKTIME_CONFIG", str(tmp_path / "absent.toml"))  # no operator file
    plans = Settings(data_dir=tmp_path).plans
    assert {name: p.sms_credits for name, p in plans.items()} == {
        "free": 0,
        "pro": 500,
        "business": 5000,
    }


# --- the dashboard -------------------------------------------------------------------------------


@contextmanager
def dashboard(t: Texting, api_key: str) -> Iterator[Dash]:
    with TestClient(create_app(t.hub)) as client:
        dash = Dash(client)
        dash.sign_in(api_key)
        yield dash


def test_the_account_page_shows_the_months_credits(texting: Callable[..., Texting]) -> None:
    t = texting()
    t.workflow(LONG)
    t.drive(t.emit()[0])
    with dashboard(t, t.account.api_key) as dash:
        page = dash.get("/account").text
    assert "SMS credits this month" in page
    assert "2 of 500 used (498 left, renews on 1 January)" in page


def test_the_test_panel_shows_what_a_send_costs_and_warns_when_too_few_are_left(
    texting: Callable[..., Texting],
) -> None:
    t = texting(allowance=3)
    wf = t.workflow(LONG)
    with dashboard(t, t.account.api_key) as dash:
        before = dash.get(f"/workflows/{wf}/test").text
        t.drive(t.emit()[0])  # 2 of 3 taken: 1 left, the next send needs 2
        after = dash.get(f"/workflows/{wf}/test").text
    assert '2 messages (GSM-7) · <span class="sms-cost">costs 2 credits a send · 3 left' in before
    assert "Not enough SMS credits" not in before
    assert "costs 2 credits a send · 1 left this month" in after
    assert (
        "Not enough SMS credits: this step would end blocked by plan (it needs 2, 1 is left "
        "this month; they renew on 1 January)." in after
    )


def test_a_plan_without_sms_credits_makes_the_step_not_ready(
    texting: Callable[..., Texting],
) -> None:
    t = texting(allowance=0)
    with TestClient(create_app(t.hub)) as client:
        answer = client.post(
            f"/v1/workflows/{t.workflow(SHORT)}/test",
            json={"mode": "dry_run"},
            headers={"Authorization": f"Bearer {t.account.api_key}"},
        )
    [step] = answer.json()["steps"]
    assert step["ready"] is False
    assert step["problems"] == [
        {
            "message": "Your Pro plan includes no SMS credits, so this step would end blocked "
            "by plan.",
            "fix": "Move to a plan with SMS credits: Business.",
            "link": "/account#plan",
        }
    ]
