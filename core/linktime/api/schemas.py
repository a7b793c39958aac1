"""What the HTTP API answers with."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..models import BookingEvent
from ..statuses import AttemptStatus, RunStatus, StepStatus
from ..storage import Attempt, Run, RunStep
from ..testruns import TestRecipients
from ..workflows import GeneratedSecret, WorkflowOut


class ErrorField(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    error: str
    message: str
    fields: list[ErrorField] = []


class RunRef(BaseModel):
    id: str
    workflow_id: str


class EventAccepted(BaseModel):
    id: str
    type: str
    received_at: datetime
    runs: list[RunRef]


class WorkflowSaved(WorkflowOut):
    """A workflow as created or replaced, with the secrets the save generated: shown once."""

    generated_secrets: list[GeneratedSecret] = []


class AttemptOut(BaseModel):
    number: int
    status: AttemptStatus
    started_at: datetime
    duration_ms: int
    http_status: int | None
    error_code: str | None
    error: str | None
    external_id: str | None
    response_excerpt: str | None

    @classmethod
    def of(cls, a: Attempt) -> AttemptOut:
        return cls.model_validate(a, from_attributes=True)


class StepOut(BaseModel):
    position: int
    action: str
    status: StepStatus
    attempts: int
    next_attempt_at: datetime | None
    external_id: str | None
    error_code: str | None
    error: str | None
    finished_at: datetime | None
    attempt_log: list[AttemptOut]

    @classmethod
    def of(cls, s: RunStep) -> StepOut:
        data: dict[str, Any] = {k: getattr(s, k) for k in cls.model_fields if k != "attempt_log"}
        return cls(**data, attempt_log=[AttemptOut.of(a) for a in s.attempt_log])


class RunOut(BaseModel):
    id: str
    workflow_id: str
    workflow_name: str
    trigger: str
    status: RunStatus
    replay_of: str | None = Field(description="The failed run this one replays")
    created_at: datetime
    finished_at: datetime | None
    steps: list[StepOut]

    @classmethod
    def of(cls, r: Run) -> RunOut:
        data: dict[str, Any] = {k: getattr(r, k) for k in cls.model_fields if k != "steps"}
        return cls(**data, steps=[StepOut.of(s) for s in r.steps])


class TestRequest(BaseModel):
    mode: Literal["dry_run", "live"] = "dry_run"
    event: BookingEvent | None = Field(
        None, description="A booking to test with; a sample if absent"
    )
    recipients: TestRecipients = Field(
        default_factory=TestRecipients, description="For live: who receives the test"
    )


class PlanOut(BaseModel):
    plan: str
    active: int
    limit: int | None
    allowed_actions: list[str]


class ConflictOut(BaseModel):
    """A name several plugins register; ``chosen`` is the distribution prefer_plugins picked."""

    kind: str
    name: str
    distributions: list[str]
    chosen: str | None
    message: str


class PluginsOut(BaseModel):
    triggers: list[str]
    actions: list[str]
    broken: list[dict[str, str]]
    conflicts: list[ConflictOut]
