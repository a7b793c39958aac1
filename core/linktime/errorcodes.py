"""Error codes that mean the server's own settings are at fault, not the account's.

A plugin fails a step with one of these when an operator setting (``LINKTIME_…``) it needs is
missing or invalid. The account's user cannot fix that: the dashboard tells them to contact
the administrator and shows none of the detail, which the engine logs for the operator.
"""

from __future__ import annotations

OPERATOR_CODES = frozenset(
    {"operator_settings", "no_from_address", "no_from_number", "agent_not_configured"}
)
# Codes that mean the same for one action only: the email relay and its login are the operator's.
OPERATOR_CODES_OF = {"email.send": frozenset({"auth_failed", "tls_error"})}


def is_operator_error(action: str, code: str | None) -> bool:
    return code in OPERATOR_CODES or code in OPERATOR_CODES_OF.get(action, ())
