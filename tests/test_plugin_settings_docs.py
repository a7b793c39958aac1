"""Each plugin README's table of operator settings (and the core README's of ``linktime.http``)
says what its model reads: exactly the variables ``linktime.operator_settings.variables(prefix,
Model)`` gives, each with the model's default, so the docs cannot drift from the code."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import linktime_email
import linktime_slack
import linktime_sms_twilio
import linktime_voice
import linktime_webhook
import linktime_whatsapp
import pytest
from linktime import http
from linktime.operator_settings import variables
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]

CASES = [
    ("README.md", http.ENV_PREFIX, http.HttpSettings),
    ("plugins/email/README.md", linktime_email.ENV_PREFIX, linktime_email.EmailOperatorSettings),
    ("plugins/slack/README.md", linktime_slack.ENV_PREFIX, linktime_slack.SlackOperatorSettings),
    (
        "plugins/sms_twilio/README.md",
        linktime_sms_twilio.ENV_PREFIX,
        linktime_sms_twilio.SmsOperatorSettings,
    ),
    ("plugins/voice/README.md", linktime_voice.ENV_PREFIX, linktime_voice.VoiceOperatorSettings),
    (
        "plugins/webhook/README.md",
        linktime_webhook.ENV_PREFIX,
        linktime_webhook.WebhookOperatorSettings,
    ),
    (
        "plugins/whatsapp/README.md",
        linktime_whatsapp.ENV_PREFIX,
        linktime_whatsapp.WhatsAppOperatorSettings,
    ),
]

# A table row documenting one variable: | `LINKTIME_…` | default | meaning |
ROW = re.compile(r"^\|\s*`(LINKTIME_[A-Z0-9_]+)`\s*\|([^|]*)\|")
# How a README says a setting has no value by default.
NO_VALUE = ("none", "unset", "empty")


def tables(markdown: str) -> Iterator[dict[str, str]]:
    """Each markdown table that documents variables: variable → its default cell."""
    table: dict[str, str] = {}
    for line in markdown.splitlines():
        if line.startswith("|"):
            row = ROW.match(line)
            if row:
                table[row.group(1)] = row.group(2).strip()
            continue
        if table:
            yield table
        table = {}
    if table:
        yield table


def documented(readme: str, names: set[str]) -> dict[str, str]:
    """The one table in ``readme`` that documents any of ``names``."""
    found = [t for t in tables((ROOT / readme).read_text()) if names & set(t)]
    assert len(found) == 1, f"{readme}: expected one table of {sorted(names)}, found {found}"
    return found[0]


def shown(default: object) -> str | set[str] | None:
    """A default as a README writes it (None: no value); a set where order means nothing."""
    if default is None or default == "" or default == () or default == []:
        return None
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, int | float):
        return f"{default:g}"
    if isinstance(default, frozenset | set):
        return {str(v) for v in default}
    if isinstance(default, tuple | list):
        return ",".join(str(v) for v in default)
    return str(default)


@pytest.mark.parametrize(("readme", "prefix", "model"), CASES, ids=[c[0] for c in CASES])
def test_readme_lists_every_operator_setting_with_its_default(
    readme: str, prefix: str, model: type[BaseModel]
) -> None:
    names = variables(prefix, model)
    table = documented(readme, set(names.values()))
    assert sorted(table) == sorted(names.values()), f"{readme} lists other variables"
    for field, variable in names.items():
        cell = table[variable]
        expected = shown(model.model_fields[field].get_default(call_default_factory=True))
        if expected is None:
            assert cell.lower().startswith(NO_VALUE), f"{variable}: no default, README: {cell!r}"
            continue
        first = re.match(r"`([^`]*)`", cell)
        assert first, f"{variable}: README gives no `default` first: {cell!r}"
        if isinstance(expected, set):
            assert {v.strip() for v in first.group(1).split(",")} == expected, variable
        else:
            assert first.group(1) == expected, variable
