"""`linktime plugin new NAME`: the package it writes installs and its own tests pass; it refuses
a bad name, a name an installed plugin already has, or an existing directory, writing nothing."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .procs import LINKTIME, clean_env
from .test_plugins import install_distribution


def install_and_test(package: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Install ``package`` as a user would (a built wheel, entry points and all) into a folder
    of its own, not this virtual environment, then run its tests from its folder with that
    folder on the path: pytest as the package's own configuration runs them."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, package],
        check=True,
        capture_output=True,
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=package,
        env=clean_env(PYTHONPATH=str(target)),
        capture_output=True,
        text=True,
    )


def new_plugin(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINKTIME, "plugin", "new", *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
    )


def test_the_new_package_installs_and_its_tests_pass(tmp_path: Path) -> None:
    made = new_plugin("fax_machine", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    package = tmp_path / "linktime-fax-machine"
    assert sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file()) == [
        "README.md",
        "linktime_fax_machine.py",
        "pyproject.toml",
        "tests/test_fax_machine.py",
    ]
    ran = install_and_test(package, tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert re.search(r"\b6 passed\b", ran.stdout), ran.stdout

    # The README's settings table lists the step settings model's fields, no more, no fewer.
    fields = subprocess.run(
        [
            sys.executable,
            "-c",
            "import linktime_fax_machine as m; print(*m.FaxMachineSettings.model_fields)",
        ],
        env=clean_env(PYTHONPATH=str(tmp_path / "site")),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    table = re.findall(r"^\| `(\w+)` \|", (package / "README.md").read_text(), re.MULTILINE)
    assert table == fields == ["url", "text"]


@pytest.mark.parametrize("name", ["Teams", "fax-machine", "2fa", "_x", "a" * 41, "teams.post"])
def test_a_name_that_cannot_be_a_plugin_name_is_refused(tmp_path: Path, name: str) -> None:
    made = new_plugin(name, cwd=tmp_path)
    assert made.returncode == 2
    assert f"Invalid value for NAME: {name!r} is not a plugin name" in made.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_existing_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "linktime-teams").mkdir()
    (tmp_path / "linktime-teams" / "notes.txt").write_text("mine")
    made = new_plugin("teams", cwd=tmp_path)
    assert made.returncode == 1
    assert "Error: linktime-teams already exists: choose another --directory" in made.stderr
    assert [p.name for p in (tmp_path / "linktime-teams").iterdir()] == ["notes.txt"]

    elsewhere = tmp_path / "plugins" / "teams"
    made = new_plugin("teams", "--directory", str(elsewhere), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (elsewhere / "linktime_teams.py").is_file()


@pytest.mark.parametrize(
    ("name", "holder"),
    [
        ("slack", "linktime-slack 0.1.0 (entry point 'slack')"),
        ("webhook", "linktime-webhook 0.1.0 (entry point 'webhook')"),
        ("email", "linktime-email 0.1.0 (entry point 'email')"),
        ("sms_twilio", "linktime-sms-twilio 0.1.0 (entry point 'sms_twilio')"),
        ("builtins", "linktime 0.1.0 (entry point 'linktime.builtins')"),
        ("linktime", "linktime 0.1.0 (entry point 'linktime.builtins')"),
    ],
)
def test_a_name_an_installed_plugin_has_is_refused(tmp_path: Path, name: str, holder: str) -> None:
    """Installing the package would replace the plugin (pip uninstalls a distribution of the
    same name) or leave two plugins answering to one name in prefer_plugins."""
    made = new_plugin(name, cwd=tmp_path)
    assert made.returncode == 2
    said = " ".join(made.stderr.split())
    assert f"Invalid value for NAME: {name!r} is taken: {holder} has the entry point name" in said
    assert f"Choose another name, e.g. {name}_2" in said
    assert list(tmp_path.iterdir()) == []


def test_a_name_whose_action_an_installed_plugin_registers_is_refused(tmp_path: Path) -> None:
    source = textwrap.dedent(
        """
        from pydantic import BaseModel

        from linktime.actions import ActionType, Result
        from linktime.hookspecs import hookimpl

        @hookimpl
        def register_actions(register):
            register(ActionType("chat.post", "Chat", BaseModel, lambda ctx: Result.ok()))
        """
    )
    install_distribution(tmp_path / "site", "acme-chat", "acme_chat", source, "acme")
    made = new_plugin("chat", cwd=tmp_path, PYTHONPATH=str(tmp_path / "site"))
    assert made.returncode == 2
    said = " ".join(made.stderr.split())
    assert "'chat' is taken: acme-chat 0.3 (entry point 'acme') has the action 'chat.post'" in said
    assert not (tmp_path / "linktime-chat").exists()
