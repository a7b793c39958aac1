"""The stand-in Twilio (from linktime-twilio's ``linktime_twilio_testing``), and clean operator
settings."""

from __future__ import annotations

import pytest
from linktime_twilio_testing import credentials, twilio

__all__ = ["credentials", "twilio"]  # fixtures


@pytest.fixture(autouse=True)
def clean_operator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from the defaults, whatever the shell exports."""
    for name in ("SUPPORTED_COUNTRIES", "TIMEOUT"):
        monkeypatch.delenv(f"LINKTIME_SMS_{name}", raising=False)
    monkeypatch.delenv("LINKTIME_TWILIO_API_BASE", raising=False)
