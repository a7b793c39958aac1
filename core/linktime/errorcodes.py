"""Error codes that mean the server's own settings are at fault, not the account's.

A plugin fails a step with one of these when an operator setting (``LINKTIME_…``) it needs is
missing or invalid. The account's user cannot fix that: the dashboard tells them to contact
the administrator and shows none of the detail, which the engine logs for the operator.
"""

from __future__ import annotations

from .actions import ActionType

OPERATOR_CODES = frozenset(
    {"operator_settings", "no_from_address", "no_from_number", "agent_not_configured"}
)


def is_operator_error(action: ActionType | None, code: str | None) -> bool:
    """Whether ``code``, ending a step of ``action`` (None: not installed), is the operator's."""
    return code in OPERATOR_CODES or (action is not None and code in action.operator_codes)
