"""Every status a run, a step and an attempt can have, and the groups the code asks about.

The values are what the database stores and the API shows; ``StrEnum`` members compare equal
to those strings, so ``Run.status == RunStatus.QUEUED`` and ``row.status in RUN_PENDING`` both
work on rows read back as plain strings.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    SCHEDULED = "scheduled"  # a time trigger's run, waiting for its due time
    QUEUED = "queued"  # due now, handed (or about to be handed) to the broker
    RUNNING = "running"  # claimed by a worker under a lease
    WAITING = "waiting"  # parked until a retry's due time
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # the booking was cancelled before the run finished
    SKIPPED = "skipped"  # a time trigger whose moment had already passed


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # an earlier step failed, or the run was cancelled
    BLOCKED_BY_PLAN = "blocked_by_plan"


class AttemptStatus(StrEnum):
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"  # failed, another attempt is scheduled
    FAILED = "failed"
    BLOCKED_BY_PLAN = "blocked_by_plan"


# Runs that have not started and will: what a reschedule moves and a cancellation cancels.
RUN_PENDING = frozenset({RunStatus.SCHEDULED, RunStatus.QUEUED, RunStatus.WAITING})
# Runs that are not over yet.
RUN_UNFINISHED = RUN_PENDING | {RunStatus.RUNNING}
RUN_TERMINAL = frozenset(RunStatus) - RUN_UNFINISHED
# Steps still to be executed (a running one is resumed after a lost worker).
STEP_OPEN = frozenset({StepStatus.PENDING, StepStatus.RUNNING})
# Steps a run stopped at: where a replay starts.
STEP_STOPPED = frozenset({StepStatus.FAILED, StepStatus.BLOCKED_BY_PLAN})
