"""The README's plugin guide, as a plugin author follows it: its worked example (the module, its
tests and its pyproject.toml, each a block headed by its file name) is at most 30 non-blank
lines of code and 30 of tests, is what `linktime plugin new teams` writes, and builds into a
package whose tests pass against `http_receiver`; the reference names every signature and field
as the code has them; `linktime plans` flags an action no plan allows."""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from linktime import ActionContext, ActionType, Outcome, Result, plugin_template
from linktime.testing import Received, Reply, run_action
from linktime.testing_hub import LinktimeHub
from pydantic import BaseModel

from .procs import LINKTIME, clean_env
from .test_plugin_new import install_and_test
from .test_plugins import ROOT, action_plugin, install_distribution

GUIDE = (ROOT / "README.md").read_text().split("## Writing a plugin", 1)[1]
EXAMPLE = GUIDE[: GUIDE.index("### How plugins load")]
# A block of the example: a line "**`path`**", a blank line, then the fenced file.
FILE_BLOCK = re.compile(r"^\*\*`([\w./-]+)`\*\*\n\n```\w+\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def example_files() -> dict[str, str]:
    return dict(FILE_BLOCK.findall(EXAMPLE))


def subsection(heading: str) -> str:
    """The text of the guide's ``### heading`` subsection, up to the next one."""
    start = GUIDE.index(f"\n### {heading}\n")
    end = GUIDE.find("\n### ", start + 1)
    return GUIDE[start : end if end != -1 else None]


def test_the_example_is_30_lines_of_code_and_30_of_tests() -> None:
    files = example_files()
    assert sorted(files) == ["linktime_teams.py", "pyproject.toml", "tests/test_teams.py"]
    for path in ("linktime_teams.py", "tests/test_teams.py"):
        lines = [line for line in files[path].splitlines() if line.strip()]
        assert len(lines) <= 30, f"{path}: {len(lines)} non-blank lines"


def test_the_example_is_what_plugin_new_writes() -> None:
    """The guide shows the generator's output for ``teams``: neither can drift from the other."""
    written = plugin_template.render(plugin_template.check_name("teams"))
    assert {path: written[path] for path in example_files()} == example_files()


def test_the_example_builds_and_its_tests_pass(tmp_path: Path) -> None:
    package = tmp_path / "linktime-teams"
    for path, text in example_files().items():
        (package / path).parent.mkdir(parents=True, exist_ok=True)
        (package / path).write_text(text)
    (package / "README.md").write_text("# linktime-teams\n")  # the pyproject's readme
    ran = install_and_test(package, tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert re.search(r"\b6 passed\b", ran.stdout), ran.stdout


def plain(function: Callable[..., Any]) -> str:
    """``function``'s signature as the guide writes it: names, defaults, ``*``; no types."""
    signature = inspect.signature(function)
    parameters = [
        p.replace(annotation=p.empty) for p in signature.parameters.values() if p.name != "self"
    ]
    return str(signature.replace(parameters=parameters, return_annotation=signature.empty))


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("heading", "documented"),
    [
        ("register_actions(register)", f"ActionType{plain(ActionType)}"),
        *[
            ("What execute returns: Result", f"Result.{name}{plain(getattr(Result, name))}")
            for name in ("ok", "retry", "fail", "from_response")
        ],
        ("Testing a plugin", f"run_action{plain(run_action)}".replace("'", '"')),
        ("Testing a plugin", f"linktime_hub.save{plain(LinktimeHub.save)}".replace("'", '"')),
        ("Testing a plugin", f"linktime_hub.refused{plain(LinktimeHub.refused)}".replace("'", '"')),
    ],
)
def test_each_signature_is_documented_as_it_is(heading: str, documented: str) -> None:
    assert flat(documented) in flat(subsection(heading))


@pytest.mark.parametrize(
    ("heading", "fields"),
    [
        ("register_actions(register)", [f.name for f in dataclasses.fields(ActionType)]),
        ("What execute gets: ActionContext", [f.name for f in dataclasses.fields(ActionContext)]),
        ("What execute returns: Result", [f.name for f in dataclasses.fields(Result)]),
        ("What execute returns: Result", [f"Outcome.{o.name}" for o in Outcome]),
        ("Testing a plugin", [f.name for f in dataclasses.fields(Received)]),
        ("Testing a plugin", [f.name for f in dataclasses.fields(Reply)]),
    ],
)
def test_each_field_is_documented(heading: str, fields: list[str]) -> None:
    text = subsection(heading)
    assert [f for f in fields if f"`{f}`" not in text and f"`{f}(" not in text] == []


def plans_table(tmp_path: Path, config: str = "") -> dict[str, list[str]]:
    """``linktime plans`` with a plugin offering ``chat.post`` (capability ``chat``, new to
    every plan) and ``note.add`` (no capability) installed: each action's row, by name."""
    site = tmp_path / "site"
    if not site.exists():
        source = action_plugin(("chat.post", "Chat", "chat"), ("note.add", "Note", None))
        install_distribution(site, "chat-plugin", "chat_plugin", source, "chat")
    (tmp_path / "linktime.toml").write_text(config)
    out = subprocess.run(
        [LINKTIME, "plans"],
        env=clean_env(
            PYTHONPATH=str(site),
            LINKTIME_LOAD_PLUGINS="chat",
            LINKTIME_CONFIG=str(tmp_path / "linktime.toml"),
        ),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split()[0]: line.split()[1:] for line in out.splitlines() if "." in line}


def test_a_new_capability_is_in_no_plan_until_the_operator_adds_it(tmp_path: Path) -> None:
    rows = plans_table(tmp_path)
    # No capability: every plan allows it.
    assert rows["note.add"] == ["yes", "yes", "yes"]
    assert " ".join(rows["chat.post"]) == (
        "- - - <- no plan allows it: add 'chat' to a plan's capabilities in linktime.toml"
    )
    rows = plans_table(
        tmp_path,
        '[plans.free]\ncapabilities = ["email"]\n[plans.team]\ncapabilities = ["email", "chat"]\n',
    )
    assert rows["chat.post"] == ["-", "yes"]


class NoteSettings(BaseModel):
    text: str  # not a TemplateStr: nothing checks it before execute renders it


def note(ctx: ActionContext) -> Result:
    return Result.ok(ctx.render(ctx.settings.text))


def test_run_action_runs_an_action_that_is_not_installed() -> None:
    action = ActionType("draft.note", "Note", NoteSettings, note)
    assert run_action(action, {"text": "{{ invitee.name }}"}).external_id == "Grace Hopper"
    # As the engine records it: a TemplateError from ctx.render fails the step ...
    failed = run_action(action, {"text": "{{ invitee.shoe_size }}"})
    assert (failed.outcome, failed.error_code) == (Outcome.FAILED, "template_error")

    # ... and a positional argument where the guide marks keyword-only ones is a TypeError,
    # retried like any exception: what running the action in a test shows before production.
    def positional(ctx: ActionContext) -> Result:
        return Result.retry("busy", "http_503")  # type: ignore[call-arg]

    retried = run_action(ActionType("draft.busy", "Busy", NoteSettings, positional), {"text": ""})
    assert (retried.outcome, retried.error_code) == (Outcome.RETRY, "exception")
    assert "TypeError" in (retried.error or "")


def test_linktime_hub_saves_through_the_api_and_gives_refusals_by_field(
    linktime_hub: LinktimeHub,
) -> None:
    webhook = {"action": "webhook.call", "settings": {"url": "https://crm.example.com/hook"}}
    saved = linktime_hub.save({"trigger": "booking.created", "steps": [webhook]})
    assert saved["id"].startswith("wf_") and saved["name"] == "Test workflow"
    assert saved["steps"][0]["settings"]["secret"] == "********"

    voice = {"action": "voice.call", "settings": {"mode": "agent", "to": "host"}}
    refused = linktime_hub.refused(
        {"trigger": "booking.created", "steps": [voice]}, plan="free", status=403
    )
    assert refused == {
        "steps.0.action": "the free plan does not include voice.call (capability voice)"
    }
    with pytest.raises(AssertionError, match="expected a 422 refusal; the save answered 201"):
        linktime_hub.refused({"trigger": "booking.created", "steps": [webhook]})
