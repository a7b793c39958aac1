"""What providers tell us after a step finished: their delivery callbacks (``POST /v1/callbacks/
{name}/{account key}``, handled by the plugin that registered the ``Callback``) and the email's
one-click unsubscribe (``/v1/unsubscribe/{token}``).

A callback's answer is stored in one transaction: its delivery updates, each moving an attempt of
that account forward only (``statuses.DELIVERY_RANK``: a replayed or late callback changes
nothing), and the addresses it puts on or takes off the suppression list.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, exists, select, text, update

from . import services, suppressions
from .callbacks import CallbackAnswer, CallbackRefused, CallbackRequest, DeliveryUpdate
from .engine import Hub
from .errors import FieldError, InputError, NotFound
from .statuses import DELIVERY_RANK, DeliveryStatus
from .storage import (
    AWAITING_REPORT,
    Account,
    Attempt,
    CallbackReceipt,
    Integration,
    Run,
    RunStep,
    insert_ignoring,
)

log = logging.getLogger(__name__)

# A provider's callback is a small form; more fields than this is not one.
MAX_FORM_FIELDS = 100
_MAX_ERROR = 1000  # characters of a provider's error text kept on the attempt


def too_large(hub: Hub, body: bytes, fields: int) -> InputError | None:
    """Why a callback's body is refused before anything reads it (413), or None."""
    limit = hub.settings.max_event_bytes
    if len(body) > limit:
        return InputError(
            "the body is too large",
            [FieldError("body", f"larger than {limit} bytes")],
            status=413,
            code="too_large",
        )
    if fields > MAX_FORM_FIELDS:
        return InputError(
            "the form has too many fields",
            [FieldError("body", f"more than {MAX_FORM_FIELDS} fields")],
            status=413,
            code="too_large",
        )
    return None


def receive(
    hub: Hub,
    name: str,
    key: str,
    url: str,
    headers: Mapping[str, str],
    form: Mapping[str, str],
    body: bytes,
) -> CallbackAnswer:
    """Hand a provider's request to the callback ``name`` for the account ``key`` names, and
    store what it answers. An unknown key or callback is ``NotFound``; a request the callback
    refuses (a bad signature) is a 403 ``InputError`` and nothing is stored."""
    refused = too_large(hub, body, len(form))
    if refused is not None:
        raise refused
    account_id = services.account_of_key(hub.secret_key(), key)
    callback = hub.registry.callbacks.get(name)
    if account_id is None or callback is None:
        raise NotFound("no such callback")
    with hub.db.connect() as conn:
        if conn.scalar(select(Account.id).where(Account.id == account_id)) is None:
            raise NotFound("no such callback")  # the account was deleted since
        stored = None
        if callback.integration is not None:
            stored = conn.scalar(
                select(Integration.settings).where(
                    Integration.account_id == account_id, Integration.name == callback.integration
                )
            )
    credentials = None
    if callback.credentials is not None and stored is not None:
        try:
            credentials = hub.sealer.open(callback.credentials, stored)
        except ValueError as exc:  # settings no longer valid (the key changed): as unconnected
            log.warning(
                "callback %s: the account's %s settings: %s", name, callback.integration, exc
            )
    request = CallbackRequest(account_id, url, headers, form, body, credentials)
    try:
        answer = callback.handle(request)
    except CallbackRefused as exc:
        raise InputError(
            f"the request was refused: {exc}" if str(exc) else "the request was refused",
            status=403,
            code="callback_refused",
        ) from None
    changed = store(hub, account_id, answer)
    log.info("callback %s for %s: %d attempt(s) moved on", name, account_id, changed)
    return answer


def store(hub: Hub, account_id: str, answer: CallbackAnswer) -> int:
    """A callback's answer in one transaction; how many attempts it moved on."""
    suppress = _valid({a: r for a, r in answer.suppress.items()})
    unsuppress = _valid({a: "" for a in answer.unsuppress})
    now = hub.clock()
    changed = 0
    with hub.db.begin() as conn:
        for item in answer.updates:
            changed += _apply(conn, account_id, item, now)
        if (suppress or unsuppress) and not _first_time(conn, account_id, answer.receipt, now):
            log.info("callback for %s: a report seen before; the opt-out list is kept", account_id)
            return changed
        for address, reason in suppress.items():
            suppressions.add(conn, account_id, address, reason, answer.suppress_source, now)
        for address in unsuppress:
            suppressions.remove(conn, account_id, address)
    return changed


def _first_time(conn: Connection, account_id: str, receipt: str | None, now: datetime) -> bool:
    """Whether this report (by its receipt) changes the list for the first time; a report
    without a receipt always does."""
    if receipt is None:
        return True
    row = {"account_id": account_id, "receipt": receipt[:200], "received_at": now}
    return insert_ignoring(conn, CallbackReceipt, row)


def _valid(addresses: dict[str, str]) -> dict[str, str]:
    """The addresses the list can keep; one it cannot is logged, not a reason to lose the rest
    of what the provider said."""
    kept = {}
    for address, reason in addresses.items():
        try:
            kept[suppressions.normalize(address)] = reason
        except InputError as exc:
            log.warning("a callback named an address the suppression list cannot keep: %s", exc)
    return kept


def _apply(conn: Connection, account_id: str, item: DeliveryUpdate, now: datetime) -> int:
    """Move the account's attempt with this external id to ``item.status`` if that ranks
    higher than where it is: a final status is never replaced, an earlier one never comes
    back. One UPDATE through ``ix_attempts_external``."""
    try:
        status = DeliveryStatus(item.status)
    except ValueError:
        log.warning("a callback reported an unknown delivery status %r", item.status)
        return 0
    lower = [s.value for s, rank in DELIVERY_RANK.items() if rank < DELIVERY_RANK[status]]
    if not lower or not item.external_id:
        return 0
    theirs = exists().where(
        RunStep.id == Attempt.step_id, Run.id == RunStep.run_id, Run.account_id == account_id
    )
    result = conn.execute(
        update(Attempt)
        .where(
            Attempt.external_id == item.external_id,
            text(AWAITING_REPORT),  # as the partial index says it, so that it is used
            Attempt.delivery_status.in_(lower),
            theirs,
        )
        .values(
            delivery_status=status.value,
            delivery_updated_at=now,
            delivery_error_code=item.error_code,
            delivery_error=item.error[:_MAX_ERROR] if item.error else None,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


# -- the one-click unsubscribe -----------------------------------------------------------------


@dataclass(frozen=True)
class Unsubscribe:
    account_id: str
    account_name: str
    address: str


def unsubscribe_target(hub: Hub, token: str) -> Unsubscribe:
    """Whose list and which address an unsubscribe token names; ``NotFound`` for a token
    not made here, or an account deleted since."""
    found = services.read_unsubscribe_token(hub.secret_key(), token)
    if found is None:
        raise NotFound("this unsubscribe link is not valid")
    account_id, address = found
    with hub.db.connect() as conn:
        name = conn.scalar(select(Account.name).where(Account.id == account_id))
    if name is None:
        raise NotFound("this unsubscribe link is not valid")
    return Unsubscribe(account_id, name, address)


def unsubscribe(hub: Hub, token: str) -> Unsubscribe:
    """Put the token's address on its account's suppression list (again is fine)."""
    target = unsubscribe_target(hub, token)
    with hub.db.begin() as conn:
        suppressions.add(
            conn,
            target.account_id,
            target.address,
            "unsubscribed with the link in an email",
            suppressions.UNSUBSCRIBE,
            hub.clock(),
        )
    return target
