"""What the HTTP API answers with."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from ..credits import CreditsOut
from ..models import BookingEvent
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
    sms_credits: CreditsOut = Field(description="This month's SMS credits (one a segment)")


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
