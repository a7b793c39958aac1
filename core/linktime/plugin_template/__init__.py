"""``linktime plugin new NAME``: a working plugin package written from the ``*.tmpl`` files
beside this module (``string.Template`` placeholders, in file names too)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata, resources
from importlib.resources.abc import Traversable
from itertools import count
from pathlib import Path
from string import Template

from .. import plugins

# The channel part of an action name ('channel.verb'), which is also the entry-point name and
# the module's suffix, so it must be a Python identifier in lower case.
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True)
class Names:
    """What the templates call the plugin ``name`` (``teams``)."""

    name: str

    @property
    def module(self) -> str:
        return f"linktime_{self.name}"

    @property
    def distribution(self) -> str:
        return f"linktime-{self.name.replace('_', '-')}"

    @property
    def action(self) -> str:
        return f"{self.name}.post"  # as linktime_$name.py.tmpl registers it

    def mapping(self) -> dict[str, str]:
        words = self.name.split("_")
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "title": " ".join(words).capitalize(),
            "Name": "".join(w.capitalize() for w in words),  # a class name prefix
        }


def check_name(name: str) -> Names:
    """``name`` as the templates use it; ValueError saying what a name may be."""
    if not NAME_RE.match(name):
        raise ValueError(
            f"{name!r} is not a plugin name: use lower-case letters, digits and _, starting "
            "with a letter, at most 40 characters (e.g. teams, fax_machine)"
        )
    return Names(name)


@dataclass(frozen=True)
class Installed:
    """The names installed plugins hold, each with the plugin holding it."""

    # Entry-point and distribution names (PEP 503 normalized: prefer_plugins compares them so).
    held: dict[str, plugins.Claimant]
    actions: dict[str, list[plugins.Claimant]]

    @classmethod
    def find(cls) -> Installed:
        eps = metadata.entry_points(group=plugins.GROUP)
        core = plugins.Claimant(plugins.BUILTINS, "linktime", metadata.version("linktime"))
        held = {plugins.normalized(n): core for n in (plugins.BUILTINS, "builtins", "linktime")}
        for ep in eps:
            dist = ep.dist.name if ep.dist else "?"
            claimant = plugins.Claimant(ep.name, dist, ep.dist.version if ep.dist else "?")
            for n in (ep.name, dist):
                held.setdefault(plugins.normalized(n), claimant)
        # Every installed plugin, whatever LINKTIME_LOAD_PLUGINS selects for this shell.
        registry = plugins.load(",".join(ep.name for ep in eps))
        actions: dict[str, list[plugins.Claimant]] = {}
        for info in registry.plugins:
            for action in info.actions:
                actions.setdefault(action, []).append(info.claimant())
        for conflict in registry.conflicts:  # a loser of a name has it in no plugin's list
            if conflict.kind == "action":
                actions.setdefault(conflict.name, []).extend(conflict.claimants)
        return cls(held, actions)

    def holders(self, names: Names) -> list[str]:
        """Who already has a name ``names`` would install, each with what it has."""
        clashes: dict[plugins.Claimant, list[str]] = {}
        for what, name in (("entry point", names.name), ("distribution", names.distribution)):
            if holder := self.held.get(plugins.normalized(name)):
                clashes.setdefault(holder, []).append(f"the {what} name {name!r}")
        for holder in dict.fromkeys(self.actions.get(names.action, [])):
            clashes.setdefault(holder, []).append(f"the action {names.action!r}")
        return [f"{holder} has {' and '.join(what)}" for holder, what in clashes.items()]

    def check_free(self, names: Names) -> None:
        """ValueError if an installed plugin has one of ``names``'s names (installing the new
        package would replace or collide with it), naming it and a free name to use instead."""
        holders = self.holders(names)
        if holders:
            free = next(n for n in _alternatives(names.name) if not self.holders(n))
            raise ValueError(
                f"{names.name!r} is taken: {'; '.join(holders)}, which installing the new "
                f"package would replace or collide with. Choose another name, e.g. {free.name}"
            )


def _alternatives(name: str) -> Iterator[Names]:
    """Valid names close to ``name``: ``name_2``, ``name_3``, …"""
    for n in count(2):
        suffix = f"_{n}"
        yield Names(name[: 40 - len(suffix)] + suffix)


def _templates(folder: Traversable, under: str = "") -> list[tuple[str, str]]:
    """Each template below ``folder``: (its relative path, its text)."""
    found = []
    for item in folder.iterdir():
        path = f"{under}{item.name}"
        if item.is_dir():
            found += _templates(item, f"{path}/")
        elif item.name.endswith(".tmpl"):
            found.append((path.removesuffix(".tmpl"), item.read_text(encoding="utf-8")))
    return found


def render(names: Names) -> dict[str, str]:
    """The package's files, by relative path."""
    values = names.mapping()
    return {
        Template(path).substitute(values): Template(text).substitute(values)
        for path, text in _templates(resources.files(__name__))
    }


def write(names: Names, directory: Path) -> list[Path]:
    """Write the package into ``directory``, which must not exist yet (nothing of the user's
    is ever overwritten); the files written."""
    directory.mkdir(parents=True, exist_ok=False)
    written = []
    for relative, text in sorted(render(names).items()):
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
