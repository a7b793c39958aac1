"""The README's plugin guide, as a plugin author follows it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .procs import LINKTIME, clean_env
from .test_plugins import action_plugin, install_distribution


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
