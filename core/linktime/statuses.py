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
    WAITING = "waiting"  # parked until a retry's due time, or a delay's end
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
    OPTED_OUT = "opted_out"  # its recipient is on the account's suppression list: not sent
    WAITING = "waiting"  # parked until a moment (a delay): the run goes on from here then
    STOPPED = "stopped"  # a filter whose conditions did not hold: the run ends here, succeeded


class AttemptStatus(StrEnum):
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"  # failed, another attempt is scheduled
    FAILED = "failed"
    BLOCKED_BY_PLAN = "blocked_by_plan"
    OPTED_OUT = "opted_out"
    WAITING = "waiting"  # the step waits until a moment (Result.wait_until)
    STOPPED = "stopped"  # the step stopped the run (Result.stop)
    SKIPPED = "skipped"  # the step's `when` did not hold: nothing was sent


class DeliveryStatus(StrEnum):
    """What became of a message after its provider took it: set when the attempt succeeds
    (``accepted``, or what the plugin knew then) and moved on by the provider's callbacks."""

    ACCEPTED = "accepted"  # the provider took it; nothing heard since
    SENT = "sent"  # handed to the carrier (or the call is ringing)
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    OPTED_OUT = "opted_out"  # not sent: the recipient opted out


# How far along a delivery is: a callback never moves an attempt back to a lower rank, and the
# final ones (rank 2) are not replaced by one another, so late or repeated callbacks change
# nothing.
DELIVERY_RANK = {
    DeliveryStatus.ACCEPTED: 0,
    DeliveryStatus.SENT: 1,
    DeliveryStatus.DELIVERED: 2,
    DeliveryStatus.UNDELIVERED: 2,
    DeliveryStatus.FAILED: 2,
    DeliveryStatus.OPTED_OUT: 2,
}


# Runs that have not started and will: what a reschedule moves and a cancellation cancels.
RUN_PENDING = frozenset({RunStatus.SCHEDULED, RunStatus.QUEUED, RunStatus.WAITING})
# Runs that are not over yet.
RUN_UNFINISHED = RUN_PENDING | {RunStatus.RUNNING}
RUN_TERMINAL = frozenset(RunStatus) - RUN_UNFINISHED
# Steps still to be executed (a running one is resumed after a lost worker).
STEP_OPEN = frozenset({StepStatus.PENDING, StepStatus.RUNNING, StepStatus.WAITING})
# Steps a run stopped at: where a replay starts.
STEP_STOPPED = frozenset({StepStatus.FAILED, StepStatus.BLOCKED_BY_PLAN})
