"""A name (action, trigger, template) registered by two distributions: nobody gets it, the
processes refuse to start naming both, and the operator's ``prefer_plugins`` or
``disabled_plugins`` settles it. Load order is sorted, whatever sys.path says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import linktime_webhook
import pytest
from linktime import plugins
from linktime.accounts import create_account
from linktime.api import create_app
from linktime.engine import Hub
from linktime.settings import Settings
from litestar.testing import TestClient

from .conftest import REDIS
from .procs import clean_env
from .test_plugins import action_plugin, install_distribution

# A package that also registers the official webhook's action, and one of its own.
HIJACK = action_plugin(
    ("webhook.call", "Call Webhook, faster", None), ("hijack.extra", "Extra", None)
)


@pytest.fixture
def hijack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``webhook-turbo`` (entry point ``turbo``) on sys.path next to the real linktime-webhook."""
    where = tmp_path / "site"
    install_distribution(where, "webhook-turbo", "webhook_turbo", HIJACK, "turbo")
    monkeypatch.syspath_prepend(str(where))
    monkeypatch.delenv("LINKTIME_LOAD_PLUGINS", raising=False)
    return where


def test_a_name_two_distributions_register_goes_to_neither(hijack: Path) -> None:
    registry = plugins.load("webhook,turbo")
    assert "webhook.call" not in registry.actions  # neither wins by load order
    assert "hijack.extra" in registry.actions  # the rest of the newcomer loads
    [conflict] = registry.conflicts
    assert (conflict.kind, conflict.name, conflict.chosen) == ("action", "webhook.call", None)
    assert sorted(c.distribution for c in conflict.claimants) == [
        "linktime-webhook",
        "webhook-turbo",
    ]
    [refusal] = registry.start_refusals()
    assert "action 'webhook.call' is registered by" in refusal
    assert "linktime-webhook 0.1.0 (entry point 'webhook')" in refusal
    assert "webhook-turbo 0.3 (entry point 'turbo')" in refusal
    assert 'prefer_plugins = {"webhook.call" = "<distribution>"}' in refusal


@pytest.mark.parametrize("choice", ["linktime-webhook", "Linktime_Webhook", "webhook"])
def test_prefer_plugins_gives_the_name_to_the_chosen_distribution(
    hijack: Path, choice: str
) -> None:
    registry = plugins.load("webhook,turbo", prefer={"webhook.call": choice})
    assert registry.actions["webhook.call"].execute is linktime_webhook.call_webhook
    [conflict] = registry.conflicts
    assert conflict.chosen is not None and conflict.chosen.distribution == "linktime-webhook"
    assert registry.start_refusals() == []
    owners = {p.distribution: p.actions for p in registry.plugins}
    assert owners == {
        "linktime": ["logic.delay", "logic.filter"],
        "linktime-webhook": ["webhook.call"],
        "webhook-turbo": ["hijack.extra"],
    }


def test_prefer_plugins_naming_neither_settles_nothing(hijack: Path) -> None:
    registry = plugins.load("webhook,turbo", prefer={"webhook.call": "linktime-email"})
    assert "webhook.call" not in registry.actions
    [refusal] = registry.start_refusals()
    assert "prefer_plugins names 'linktime-email', which matches none of them" in refusal


def test_a_disabled_plugin_claims_nothing(hijack: Path) -> None:
    registry = plugins.load("webhook,turbo", disabled=["turbo"])
    assert registry.conflicts == []
    assert registry.actions["webhook.call"].execute is linktime_webhook.call_webhook


def test_the_same_distribution_twice_on_sys_path_is_no_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for copy in ("one", "two"):
        install_distribution(tmp_path / copy, "webhook-turbo", "webhook_turbo", HIJACK, "turbo")
        monkeypatch.syspath_prepend(str(tmp_path / copy))
    registry = plugins.load("turbo")
    assert registry.conflicts == [] and registry.broken == []
    assert [p.distribution for p in registry.plugins] == ["linktime", "webhook-turbo"]
    assert registry.actions["webhook.call"].title == "Call Webhook, faster"


SMALL = """
from linktime.actions import TriggerType
from linktime.hookspecs import hookimpl

@hookimpl
def register_triggers(register):
    register(TriggerType("{name}.happened", "{name}"))
"""


@pytest.mark.parametrize("first", ["a", "b"])
def test_load_order_is_sorted_whatever_sys_path_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    # Entry points "same" from two distributions, and "alpha" from a third, in two folders
    # whose sys.path order the parameter flips.
    install_distribution(tmp_path / "a", "zeta-dist", "zeta_mod", SMALL.format(name="zeta"), "same")
    install_distribution(tmp_path / "a", "mid-dist", "mid_mod", SMALL.format(name="mid"), "alpha")
    install_distribution(tmp_path / "b", "beta-dist", "beta_mod", SMALL.format(name="beta"), "same")
    for folder in ("b", "a") if first == "a" else ("a", "b"):
        monkeypatch.syspath_prepend(str(tmp_path / folder))  # the last prepended comes first
    registry = plugins.load("alpha,same")
    loaded = [(p.name, p.distribution) for p in registry.plugins]
    assert loaded == [
        ("linktime.builtins", "linktime"),
        ("alpha", "mid-dist"),
        ("same", "beta-dist"),
        ("same", "zeta-dist"),
    ]
    assert registry.broken == [] and registry.conflicts == []


def _linktime(
    args: list[str], cwd: Path, site: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = clean_env(
        **{"PYTHONPATH": str(site), "LINKTIME_LOAD_PLUGINS": "webhook,turbo", **env}
    )
    # A process that wrongly starts would serve forever: the timeout fails the test instead.
    return subprocess.run(
        [sys.executable, "-m", "linktime", *args],
        env=environ,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "command", [["serve", "--port", "1"], ["worker"], ["scheduler"]], ids=lambda c: c[0]
)
def test_serve_worker_and_scheduler_refuse_to_start_on_a_conflict(
    hijack: Path, tmp_path: Path, command: list[str]
) -> None:
    done = _linktime(command, tmp_path, hijack, LINKTIME_REDIS_URL=REDIS)
    assert done.returncode != 0
    assert "cannot start" in done.stderr
    assert "action 'webhook.call' is registered by" in done.stderr
    assert "linktime-webhook" in done.stderr and "webhook-turbo" in done.stderr
    assert "prefer_plugins" in done.stderr


def test_linktime_plugins_shows_the_conflict_and_the_toml_choice(
    hijack: Path, tmp_path: Path
) -> None:
    listed = _linktime(["plugins"], tmp_path, hijack)
    assert listed.returncode == 0, listed.stderr
    assert "CONFLICT: action 'webhook.call' is registered by" in listed.stdout
    assert "turbo  (webhook-turbo 0.3)" in listed.stdout

    config = tmp_path / "linktime.toml"
    config.write_text('prefer_plugins = {"webhook.call" = "linktime-webhook"}\n')
    listed = _linktime(["plugins", "--json"], tmp_path, hijack, LINKTIME_CONFIG=str(config))
    data = json.loads(listed.stdout)
    [conflict] = data["conflicts"]
    assert (conflict["name"], conflict["chosen"]) == ("webhook.call", "linktime-webhook")
    webhook = next(p for p in data["plugins"] if p["name"] == "webhook")
    assert webhook["actions"] == ["webhook.call"] and webhook["timeouts"] == {"webhook.call": 15}


def test_get_plugins_shows_the_conflict(hijack: Path, tmp_path: Path) -> None:
    hub = Hub(Settings(data_dir=tmp_path / "data", secret_key="k", load_plugins="webhook,turbo"))
    hub.migrate()
    key = create_account(hub, "a", "free").api_key
    with TestClient(create_app(hub)) as client:
        answer = client.get("/v1/plugins", headers={"Authorization": f"Bearer {key}"})
    hub.close()
    assert answer.status_code == 200
    body = answer.json()
    assert "webhook.call" not in body["actions"] and "hijack.extra" in body["actions"]
    [conflict] = body["conflicts"]
    assert conflict["distributions"] == ["webhook-turbo", "linktime-webhook"]  # load order
    assert conflict["chosen"] is None
    assert "choose one in linktime.toml" in conflict["message"]


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["worker"]], ids=lambda c: c[0])
def test_serve_and_worker_refuse_an_action_timeout_not_below_the_lease(
    tmp_path: Path, command: list[str]
) -> None:
    done = _linktime(
        command,
        tmp_path,
        tmp_path,
        LINKTIME_LOAD_PLUGINS="webhook",
        LINKTIME_REDIS_URL=REDIS,
        LINKTIME_STEP_LEASE_SECONDS="15",
    )
    assert done.returncode != 0
    assert (
        "action 'webhook.call' (linktime-webhook) may take 15s per attempt, "
        "not below the step lease of 15s"
    ) in done.stderr
    listed = _linktime(
        ["plugins"],
        tmp_path,
        tmp_path,
        LINKTIME_LOAD_PLUGINS="webhook",
        LINKTIME_STEP_LEASE_SECONDS="15",
    )
    assert "not below the step lease (15s): serve and worker refuse to start" in listed.stdout


@pytest.mark.parametrize(
    "command", [["serve", "--port", "1"], ["worker"], ["scheduler"]], ids=lambda c: c[0]
)
def test_an_invalid_plugin_timeout_setting_stops_the_start_naming_it(
    tmp_path: Path, command: list[str]
) -> None:
    """Not a start without webhook.call (the plugin skipped as broken): the operator's mistake
    stops every process until it is fixed."""
    for value in ("inf", "nan", "0", "-5", "soon"):
        done = _linktime(
            command,
            tmp_path,
            tmp_path,
            LINKTIME_LOAD_PLUGINS="webhook",
            LINKTIME_REDIS_URL=REDIS,
            LINKTIME_WEBHOOK_TIMEOUT=value,
        )
        assert done.returncode != 0, value
        assert "cannot start" in done.stderr, value
        assert "plugin webhook (linktime-webhook): LINKTIME_WEBHOOK_TIMEOUT is" in done.stderr
