"""Plugin discovery through entry points: built-ins, broken plugins, the load filter, the CLI,
and the core installed alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
import venv
from pathlib import Path

import pytest
from linktime import plugins
from linktime.actions import DEFAULT_ACTION_TIMEOUT, ActionType, Result

from .conftest import NoSettings

ROOT = Path(__file__).resolve().parents[1]
SEVEN = [
    "booking.cancelled",
    "booking.created",
    "booking.no_show",
    "booking.rescheduled",
    "meeting.after",
    "meeting.before",
    "payment.received",
]

ACTION_PLUGIN = """
from pydantic import BaseModel
from linktime.actions import ActionType, Result
from linktime.hookspecs import hookimpl

class Settings(BaseModel):
    text: str = "hi"

def execute(ctx):
    return Result.ok("sent")

@hookimpl
def register_actions(register):
    for name, title, capability in {actions!r}:
        register(ActionType(name, title, Settings, execute, capability=capability))
"""


def action_plugin(*actions: tuple[str, str, str | None]) -> str:
    """The source of a plugin module registering each (name, title, capability) action."""
    return ACTION_PLUGIN.format(actions=actions)


PLUGINS = {
    "good_plugin": action_plugin(("good.act", "Good action", "good")),
    "broken_plugin": "raise RuntimeError('boom at import')\n",
    "typo_plugin": textwrap.dedent(
        """
        from linktime.hookspecs import hookimpl

        @hookimpl
        def register_action(register):
            pass
        """
    ),
    "clash_plugin": textwrap.dedent(
        """
        from linktime.actions import TriggerType
        from linktime.hookspecs import hookimpl

        @hookimpl
        def register_triggers(register):
            register(TriggerType("booking.created", "Mine too"))
        """
    ),
}


def install_distribution(
    where: Path, distribution: str, module: str, source: str, entry_point: str
) -> None:
    """A distribution importlib.metadata finds on sys.path (when ``where`` is on it): a real
    entry point in the ``linktime`` group, no pip."""
    where.mkdir(parents=True, exist_ok=True)
    (where / f"{module}.py").write_text(source)
    dist = where / f"{distribution.replace('-', '_')}-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text(f"[linktime]\n{entry_point} = {module}\n")


def install_fake_plugins(where: Path) -> Path:
    for module, source in PLUGINS.items():
        install_distribution(where, module, module, source, module.removesuffix("_plugin"))
    return where


@pytest.fixture
def fake_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(install_fake_plugins(tmp_path)))
    monkeypatch.delenv("LINKTIME_LOAD_PLUGINS", raising=False)
    return tmp_path


def test_builtins_register_the_triggers_and_the_logic_steps() -> None:
    registry = plugins.load("")
    assert sorted(registry.triggers) == SEVEN
    # The delay and filter steps come from the core's default plugin, as a channel's would.
    assert sorted(registry.actions) == ["logic.delay", "logic.filter"]
    assert all(a.logic for a in registry.actions.values())
    assert [p.name for p in registry.plugins] == ["linktime.builtins"]
    assert registry.triggers["meeting.before"].kind == "time"


def test_a_broken_plugin_is_reported_and_the_others_load(fake_plugins: Path) -> None:
    registry = plugins.load()
    broken = {b.name: b.error for b in registry.broken}
    assert "boom at import" in broken["broken"]
    assert "register_action" in broken["typo"]
    assert "good.act" in registry.actions
    # The built-ins are a plugin like any other: a name both register belongs to neither.
    assert "clash" not in broken
    [conflict] = registry.conflicts
    assert (conflict.kind, conflict.name) == ("trigger", "booking.created")
    assert [c.distribution for c in conflict.claimants] == ["linktime", "clash_plugin"]
    assert "booking.created" not in registry.triggers
    assert "booking.cancelled" in registry.triggers
    good = next(p for p in registry.plugins if p.name == "good")
    assert (good.distribution, good.version, good.actions) == ("good_plugin", "0.3", ["good.act"])


def test_load_plugins_filter(fake_plugins: Path) -> None:
    only_good = plugins.load("good")
    assert [p.name for p in only_good.plugins] == ["linktime.builtins", "good"]
    assert only_good.broken == []
    assert sorted(plugins.load("").actions) == ["logic.delay", "logic.filter"]


def test_cli_lists_plugins_and_broken_ones(fake_plugins: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(fake_plugins)}
    env.pop("LINKTIME_LOAD_PLUGINS", None)
    out = subprocess.run(
        [sys.executable, "-m", "linktime", "plugins"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "good  (good_plugin 0.3)" in out
    assert "actions: good.act" in out
    assert "good.act needs capability: good; timeout: 30s per attempt" in out
    assert re.search(r"BROKEN broken .*boom at import", out)
    assert "CONFLICT: trigger 'booking.created' is registered by linktime" in out
    data = json.loads(
        subprocess.run(
            [sys.executable, "-m", "linktime", "plugins", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert sorted(b["name"] for b in data["broken"]) == ["broken", "typo"]
    assert [(c["name"], c["chosen"]) for c in data["conflicts"]] == [("booking.created", None)]


def hook_signatures() -> list[str]:
    """Every hook the core declares, as ``name(arg, ...)``: read from pluggy's own record of
    the specs (the loaded plugin manager), so a new hook or argument needs no list updated."""
    manager = plugins.load("").manager
    assert manager is not None
    callers = {name: caller for name, caller in vars(manager.hook).items() if caller.spec}
    return [f"{name}({', '.join(c.spec.argnames)})" for name, c in sorted(callers.items())]


def test_the_hook_specs_are_read_from_pluggy() -> None:
    signatures = hook_signatures()
    assert "register_actions(register)" in signatures
    assert "startup(context)" in signatures


@pytest.mark.parametrize("signature", hook_signatures())
def test_every_hook_is_documented_in_the_readme(signature: str) -> None:
    """datasette's meta-test: each hook has a heading ``### name(arg, ...)`` in the plugin guide
    with exactly its arguments."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Writing a plugin") :]
    headings = re.findall(r"^### (\S+\(.*\))$", section, flags=re.MULTILINE)
    name = signature.split("(")[0]
    documented = [h for h in headings if h.split("(")[0] == name]
    assert documented == [signature], f"hook {signature}: README has {documented or 'nothing'}"


CORE_ALONE = """
import json, sys
from litestar.testing import TestClient
from linktime.accounts import create_account
from linktime.api import create_app
from linktime.engine import Hub
from linktime.settings import Settings

hub = Hub(Settings(data_dir=sys.argv[1], secret_key="k"))
hub.migrate()
key = create_account(hub, "a", "free").api_key
with TestClient(create_app(hub)) as client:
    r = client.post("/v1/workflows", headers={"Authorization": f"Bearer {key}"},
                    json={"name": "w", "trigger": "booking.created",
                          "steps": [{"action": "webhook.call", "settings": {}}]})
print(json.dumps({"status": r.status_code, "body": r.json()}))
"""


def test_the_core_installed_alone(tmp_path: Path) -> None:
    """`pip install .` in a fresh virtual environment: six triggers, no actions, and a
    workflow naming an action that is not installed is refused with the installed list."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", str(ROOT)], check=True, capture_output=True
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINKTIME_")}
    listed = json.loads(
        subprocess.run(
            [str(env_dir / "bin" / "linktime"), "plugins", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        ).stdout
    )
    assert [p["name"] for p in listed["plugins"]] == ["linktime.builtins"]
    assert sorted(listed["plugins"][0]["triggers"]) == SEVEN
    assert listed["plugins"][0]["actions"] == ["logic.delay", "logic.filter"]
    assert listed["broken"] == []

    script = tmp_path / "core_alone.py"
    script.write_text(CORE_ALONE)
    answer = json.loads(
        subprocess.run(
            [str(py), str(script), str(tmp_path / "data")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        ).stdout
    )
    assert answer["status"] == 422
    assert answer["body"]["fields"] == [
        {
            "field": "steps.0.action",
            "message": "action 'webhook.call' is not installed; "
            "installed actions: logic.delay, logic.filter",
        }
    ]


def test_an_action_declares_a_positive_timeout() -> None:
    def execute(ctx: object) -> Result:  # never called: only the declaration is checked
        return Result.ok()

    assert ActionType("t.ok", "T", NoSettings, execute).timeout == DEFAULT_ACTION_TIMEOUT
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=r"t\.bad: timeout"):
            ActionType("t.bad", "T", NoSettings, execute, timeout=bad).validate()


@pytest.mark.parametrize(
    ("plugin", "variable", "action", "declared"),
    [
        ("webhook", "LINKTIME_WEBHOOK_TIMEOUT", "webhook.call", 7.0),
        ("email", "LINKTIME_EMAIL_TIMEOUT", "email.send", 7.0 + 2.0),  # + the QUIT wait
        ("sms_twilio", "LINKTIME_SMS_TIMEOUT", "sms.send", 7.0),
        ("voice", "LINKTIME_VOICE_TIMEOUT", "voice.call", 7.0),
        ("whatsapp", "LINKTIME_WHATSAPP_TIMEOUT", "whatsapp.send", 7.0),
        ("slack", "LINKTIME_SLACK_TIMEOUT", "slack.post", 7.0),
    ],
)
def test_each_official_action_declares_its_operator_timeout(
    monkeypatch: pytest.MonkeyPatch, plugin: str, variable: str, action: str, declared: float
) -> None:
    monkeypatch.setenv(variable, "7")
    assert plugins.load(plugin).actions[action].timeout == declared
    # An invalid timeout stops the processes at start, naming it (not a start without the action).
    monkeypatch.setenv(variable, "soon")
    registry = plugins.load(plugin)
    assert action not in registry.actions
    [refusal] = registry.start_refusals()
    assert f"{variable} is not valid" in refusal


@pytest.mark.parametrize(
    "plugin", sorted(p.parent.name for p in (ROOT / "plugins").glob("*/pyproject.toml"))
)
def test_each_plugin_tested_alone_stops_a_hanging_test_after_300_s(plugin: str) -> None:
    """CI tests each plugin alone: its `[test]` extra in a fresh environment, pytest pointed at
    its folder (so the plugin's own pyproject is the configuration). There too a hanging test
    is stopped after 300 s."""
    folder = ROOT / "plugins" / plugin
    extras = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    test_extra = extras["optional-dependencies"]["test"]
    assert any(re.match(r"pytest-timeout\b", requirement) for requirement in test_extra)
    # Nothing to collect in a README: only the header, with the configuration in force.
    header = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(folder / "README.md")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    assert "configfile: pyproject.toml" in header and f"rootdir: {folder}" in header
    assert "timeout: 300.0s" in header
