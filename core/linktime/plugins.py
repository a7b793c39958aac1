"""Finds plugins through the ``linktime`` entry-point group and merges what they register."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from . import builtins, hookspecs
from .actions import ActionType, Template, TriggerType

log = logging.getLogger(__name__)

GROUP = "linktime"
BUILTINS = "linktime.builtins"


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    actions: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BrokenPlugin:
    name: str
    distribution: str
    error: str


@dataclass
class Registry:
    """Everything the installed plugins offer, by name."""

    triggers: dict[str, TriggerType] = field(default_factory=dict)
    actions: dict[str, ActionType] = field(default_factory=dict)
    templates: dict[str, Template] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    broken: list[BrokenPlugin] = field(default_factory=list)

    def action(self, name: str) -> ActionType:
        try:
            return self.actions[name]
        except KeyError:
            raise UnknownAction(name, sorted(self.actions)) from None


class UnknownAction(LookupError):
    def __init__(self, name: str, installed: list[str]) -> None:
        self.name = name
        self.installed = installed
        listed = ", ".join(installed) if installed else "none"
        super().__init__(f"action {name!r} is not installed; installed actions: {listed}")


def _selected(allowed: str | None) -> set[str] | None:
    if allowed is None:
        return None
    return {name.strip() for name in allowed.split(",") if name.strip()}


def _entry_points(allowed: set[str] | None) -> Iterable[metadata.EntryPoint]:
    for ep in metadata.entry_points(group=GROUP):
        if allowed is None or ep.name in allowed:
            yield ep


def load(load_plugins: str | None = None, disabled: Iterable[str] = ()) -> Registry:
    """Load the built-ins and every installed plugin; a plugin that fails is reported, not fatal.

    ``load_plugins`` (default: ``LINKTIME_LOAD_PLUGINS``) names the entry points to load;
    ``disabled`` names entry points the operator turned off for everyone.
    """
    if load_plugins is None:
        load_plugins = os.environ.get("LINKTIME_LOAD_PLUGINS")
    allowed = _selected(load_plugins)
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    modules: list[tuple[PluginInfo, ModuleType]] = [
        (PluginInfo(BUILTINS, "linktime", metadata.version("linktime")), builtins)
    ]
    seen: set[str] = set()
    for ep in _entry_points(allowed):
        if ep.name in seen or ep.name in disabled:  # the same distribution found twice on sys.path
            continue
        seen.add(ep.name)
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        try:
            module = ep.load()
        except Exception as exc:  # a plugin must never take the host down
            _broken(registry, ep.name, dist, f"import failed: {type(exc).__name__}: {exc}")
            continue
        modules.append((PluginInfo(ep.name, dist, version), module))

    for info, module in modules:
        try:
            pm.register(module, name=info.name)
            pm.check_pending()
        except Exception as exc:
            if pm.is_registered(module):
                pm.unregister(module)
            _broken(registry, info.name, info.distribution, f"invalid hooks: {exc}")
            continue
        try:
            _collect(pm, module, info, registry)
        except Exception as exc:
            _broken(registry, info.name, info.distribution, f"{type(exc).__name__}: {exc}")
            pm.unregister(module)
            continue
        registry.plugins.append(info)
    return registry


def _broken(registry: Registry, name: str, dist: str, error: str) -> None:
    log.error("plugin %s (%s) skipped: %s", name, dist, error)
    registry.broken.append(BrokenPlugin(name, dist, error))


def _collect(pm: pluggy.PluginManager, module: ModuleType, info: PluginInfo, reg: Registry) -> None:
    """Call one plugin's hooks; merge only once all of them validated, so a bad plugin adds
    nothing at all."""
    found: dict[str, dict[str, Any]] = {"triggers": {}, "actions": {}, "templates": {}}

    def collector(kind: str, cls: type, existing: dict[str, Any]) -> Callable[[Any], None]:
        def register(item: TriggerType | ActionType | Template) -> None:
            if not isinstance(item, cls):
                raise TypeError(f"register_{kind} expects {cls.__name__}, got {item!r}")
            item.validate()
            if item.name in existing or item.name in found[kind]:
                raise ValueError(f"{kind[:-1]} {item.name!r} is already registered")
            found[kind][item.name] = item

        return register

    hooks = (
        ("triggers", TriggerType, reg.triggers),
        ("actions", ActionType, reg.actions),
        ("templates", Template, reg.templates),
    )
    for kind, cls, existing in hooks:
        for impl in getattr(pm.hook, f"register_{kind}").get_hookimpls():
            if impl.plugin is module:
                impl.function(register=collector(kind, cls, existing))
    for name, template in found["templates"].items():
        known = reg.triggers.keys() | found["triggers"].keys()
        if template.trigger not in known:
            raise ValueError(f"template {name!r} uses unknown trigger {template.trigger!r}")
    reg.triggers.update(found["triggers"])
    reg.actions.update(found["actions"])
    reg.templates.update(found["templates"])
    info.triggers = sorted(found["triggers"])
    info.actions = sorted(found["actions"])
    info.templates = sorted(found["templates"])
