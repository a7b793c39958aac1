"""Loading every installed plugin does not load the provider SDKs (issue 17: the embedded
default's RSS): slack-sdk, aiohttp, Twilio's SDK, requests, Stripe's SDK, aiosmtplib and
icalendar are imported when a plugin first uses its provider, not at start.

A fresh interpreter starts as ``linktime serve`` does (the plugins loaded through the registry,
their ``startup`` hooks run for every role, the app built), then each plugin does one step
that needs its SDK; the providers are loopback ports nobody listens on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

SDKS = ("slack_sdk", "aiohttp", "twilio", "requests", "stripe", "aiosmtplib", "icalendar")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from datetime import UTC, datetime

    from linktime import lifecycle
    from linktime.api import create_app
    from linktime.engine import Hub

    SDKS = sys.argv[1:]

    def loaded():
        return sorted(name for name in SDKS if name in sys.modules)

    hub = Hub()
    context = lifecycle.ProcessContext(frozenset(("api", "worker", "scheduler")), hub.settings)
    lifecycle.start(hub.registry, context)
    create_app(hub)
    report = {"plugins": sorted(p.name for p in hub.registry.plugins), "at_start": loaded()}

    from linktime.testing import run_action

    results = {}
    results["slack"] = run_action(
        "slack.post", {"channel": "#sales", "text": "hi"},
        credentials={"bot_token": "xoxb-0000000000-0000000000-abcdefghijklmnop"},
    ).error_code
    report["after_slack"] = loaded()
    results["sms"] = run_action(
        "sms.send", {"to": "number", "number": "+14155550100", "text": "hi"},
        credentials={
            "account_sid": "AC" + "0" * 32, "auth_token": "secret", "from_number": "+14155550123",
        },
    ).error_code
    report["after_sms"] = loaded()
    results["email"] = run_action(
        "email.send",
        {"addresses": ["ann@example.com"], "subject": "s", "text": "t", "calendar_invite": True},
    ).error_code
    report["after_email"] = loaded()
    import linktime_stripe

    linktime_stripe.sign(
        b"{}", linktime_stripe.StripeSettings(signing_secret="whsec_x"), datetime.now(UTC)
    )
    report["after_stripe"] = loaded()
    report["results"] = results
    lifecycle.stop(hub.registry, context)
    print(json.dumps(report))
    """
)


def _closed_port() -> int:
    """A loopback port nobody listens on (connecting there is refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serving_loads_no_provider_sdk_until_a_plugin_uses_it(tmp_path: Path) -> None:
    port = _closed_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("LINKTIME_") or key == "LINKTIME_TESTING"
    }
    env |= {
        "LINKTIME_DATA_DIR": str(tmp_path),
        "LINKTIME_SLACK_API_BASE": f"http://127.0.0.1:{port}/api/",
        "LINKTIME_TWILIO_API_BASE": f"http://127.0.0.1:{port}",
        "LINKTIME_EMAIL_SMTP_HOST": "127.0.0.1",
        "LINKTIME_EMAIL_SMTP_PORT": str(port),
        "LINKTIME_EMAIL_SMTP_SECURITY": "none",
        "LINKTIME_EMAIL_FROM_ADDRESS": "bookings@example.com",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *SDKS],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"slack", "twilio", "sms_twilio", "email", "stripe"} <= set(report["plugins"])
    assert report["at_start"] == []
    # Each step reached its SDK, which could not connect (nothing listens on the port).
    assert report["results"] == {
        "slack": "connection_error",
        "sms": "connection_error",
        "email": "connection_error",
    }
    assert set(report["after_slack"]) == {"slack_sdk", "aiohttp"}
    assert set(report["after_sms"]) - set(report["after_slack"]) >= {"twilio", "requests"}
    assert set(report["after_email"]) - set(report["after_sms"]) == {"aiosmtplib", "icalendar"}
    assert "stripe" in set(report["after_stripe"]) - set(report["after_email"])
    assert set(report["after_stripe"]) == set(SDKS)
