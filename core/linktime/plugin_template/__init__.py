"""``linktime plugin new NAME``: a working plugin package written from the ``*.tmpl`` files
beside this module (``string.Template`` placeholders, in file names too)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

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
