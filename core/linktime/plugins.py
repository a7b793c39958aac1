"""Finds plugins through the ``linktime`` entry-point group and merges what they register.

Plugins load in one order on every machine, whatever sys.path says: the core's built-ins
first, then by entry-point name, then by distribution name. Load order never decides who owns
a name: a trigger, action or template name that more than one plugin registers is a conflict,
settled only by the operator (``prefer_plugins``, or ``disabled_plugins``); until then nobody
gets the name and the processes that run the system refuse to start.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from . import builtins, hookspecs
from .actions import ActionType, Template, TriggerType
from .callbacks import Callback
from .operator_settings import OperatorSettingError
from .sources import SourceType

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger(__name__)

GROUP = "linktime"
BUILTINS = "linktime.builtins"
KINDS = ("triggers", "actions", "templates", "callbacks", "sources")

# What one plugin registers, by kind (one of KINDS) then name.
Offer = dict[str, dict[str, Any]]


def normalized(distribution: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``Linktime_Webhook`` is
    ``linktime-webhook``."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    actions: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    callbacks: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def claimant(self) -> Claimant:
        return Claimant(self.name, self.distribution, self.version)


@dataclass(frozen=True)
class BrokenPlugin:
    name: str
    distribution: str
    error: str
    # An operator setting is at fault, not the plugin: fixed by the operator, so the processes
    # refuse to start rather than run without the plugin.
    refuses_start: bool = False


@dataclass(frozen=True)
class Claimant:
    """One plugin (entry point of a distribution) registering a name another also registers."""

    plugin: str
    distribution: str
    version: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version} (entry point {self.plugin!r})"

    def answers_to(self, choice: str) -> bool:
        """Whether a ``prefer_plugins`` value names this plugin: its distribution or entry point."""
        return normalized(choice) == normalized(self.distribution) or choice == self.plugin


@dataclass(frozen=True)
class Conflict:
    """A name more than one plugin registers. ``chosen`` is the claimant ``prefer_plugins``
    picked (its claim is used, the others dropped); None leaves the name to nobody."""

    kind: str  # "trigger", "action" or "template"
    name: str
    claimants: tuple[Claimant, ...]
    preferred: str | None = None  # what prefer_plugins says for the name, if anything
    chosen: Claimant | None = None

    def describe(self) -> str:
        claimed = f"{self.kind} {self.name!r} is registered by " + " and by ".join(
            str(c) for c in self.claimants
        )
        if self.chosen is not None:
            return f"{claimed}; {self.chosen.distribution}'s is used (prefer_plugins)"
        if self.preferred is not None:
            matches = sum(c.answers_to(self.preferred) for c in self.claimants)
            claimed += (
                f"; prefer_plugins names {self.preferred!r}, which matches "
                f"{'more than one' if matches else 'none'} of them"
            )
        choices = " or ".join(sorted({f'"{c.distribution}"' for c in self.claimants}))
        return (
            f'{claimed}; choose one in linktime.toml: prefer_plugins = {{"{self.name}" = '
            f'"<distribution>"}} with {choices} as <distribution> (an entry-point name works '
            'too), or drop a plugin with disabled_plugins = ["<entry point>"]'
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "claimants": [asdict(c) for c in self.claimants],
            "chosen": self.chosen.distribution if self.chosen else None,
            "message": self.describe(),
        }


@dataclass
class Registry:
    """Everything the installed plugins offer, by name."""

    triggers: dict[str, TriggerType] = field(default_factory=dict)
    actions: dict[str, ActionType] = field(default_factory=dict)
    templates: dict[str, Template] = field(default_factory=dict)
    callbacks: dict[str, Callback] = field(default_factory=dict)
    sources: dict[str, SourceType] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    broken: list[BrokenPlugin] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    # The loaded plugins' hooks (broken plugins unregistered), for the per-process ones.
    manager: pluggy.PluginManager | None = None

    def hookimpls(self, hook: str) -> list[pluggy.HookImpl]:
        """The loaded plugins' implementations of ``hook``, the built-ins first, then in load
        order."""
        if self.manager is None:
            return []
        return list(getattr(self.manager.hook, hook).get_hookimpls())

    def action(self, name: str) -> ActionType:
        try:
            return self.actions[name]
        except KeyError:
            raise UnknownAction(name, sorted(self.actions)) from None

    def unresolved(self) -> list[Conflict]:
        return [c for c in self.conflicts if c.chosen is None]

    def start_refusals(self, step_lease_seconds: float | None = None) -> list[str]:
        """Why a process must not start with these plugins: names claimed twice and not settled
        and plugins whose operator settings are invalid (any process); for one that runs steps
        (``step_lease_seconds`` given), actions whose timeout is not below the step lease, as
        such a step could be taken over mid-send."""
        refusals = [c.describe() for c in self.unresolved()]
        refusals += [
            f"plugin {b.name} ({b.distribution}): {b.error}" for b in self.broken if b.refuses_start
        ]
        if step_lease_seconds is None:
            return refusals
        owners = {name: f" ({p.distribution})" for p in self.plugins for name in p.actions}
        for name, action in sorted(self.actions.items()):
            if action.timeout >= step_lease_seconds:
                refusals.append(
                    f"action {name!r}{owners.get(name, '')} may take {action.timeout:g}s per "
                    f"attempt, not below the step lease of {step_lease_seconds:g}s: set "
                    "LINKTIME_STEP_LEASE_SECONDS above it or lower the plugin's timeout setting"
                )
        return refusals


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


def _entry_points(allowed: set[str] | None, disabled: Iterable[str]) -> list[metadata.EntryPoint]:
    """The entry points to load, by name then distribution. A distribution found twice on
    sys.path counts once: its first copy, the one ``import`` finds."""
    off = set(disabled)
    found: dict[tuple[str, str], metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=GROUP):
        if ep.name in off or (allowed is not None and ep.name not in allowed):
            continue
        found.setdefault((ep.name, normalized(ep.dist.name if ep.dist else "?")), ep)
    return [found[key] for key in sorted(found)]


def configured(settings: Settings) -> Registry:
    """The plugins the operator's settings select, conflicts settled as they say."""
    return load(settings.load_plugins, settings.disabled_plugins, settings.prefer_plugins)


def load(
    load_plugins: str | None = None,
    disabled: Iterable[str] = (),
    prefer: Mapping[str, str] | None = None,
) -> Registry:
    """Load the built-ins and every installed plugin; a plugin that fails is reported, not fatal.

    ``load_plugins`` (default: ``LINKTIME_LOAD_PLUGINS``) names the entry points to load;
    ``disabled`` names entry points the operator turned off for everyone; ``prefer`` maps a name
    several plugins register to the distribution (or entry point) whose claim is used.
    """
    if load_plugins is None:
        load_plugins = os.environ.get("LINKTIME_LOAD_PLUGINS")
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    modules: list[tuple[PluginInfo, ModuleType]] = [
        (PluginInfo(BUILTINS, "linktime", metadata.version("linktime")), builtins)
    ]
    for ep in _entry_points(_selected(load_plugins), disabled):
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        try:
            module = ep.load()
        except Exception as exc:  # a plugin must never take the host down
            _broken(registry, ep.name, dist, f"import failed: {type(exc).__name__}: {exc}")
            continue
        modules.append((PluginInfo(ep.name, dist, version), module))

    offers: list[tuple[PluginInfo, Offer]] = []
    for info, module in modules:
        try:
            # Two distributions may use the same entry-point name: pluggy needs unique ones.
            pm.register(module, name=f"{info.name}@{info.distribution}")
            pm.check_pending()
        except Exception as exc:
            if pm.is_registered(module):
                pm.unregister(module)
            _broken(registry, info.name, info.distribution, f"invalid hooks: {exc}")
            continue
        try:
            offers.append((info, _collect(pm, module)))
        except OperatorSettingError as exc:
            _broken(registry, info.name, info.distribution, str(exc), refuses_start=True)
            pm.unregister(module)
        except Exception as exc:
            _broken(registry, info.name, info.distribution, f"{type(exc).__name__}: {exc}")
            pm.unregister(module)
    _merge(registry, _with_known_triggers(registry, offers), prefer or {})
    loaded = {f"{info.name}@{info.distribution}" for info in registry.plugins}
    for name, _ in pm.list_name_plugin():
        if name not in loaded:
            pm.unregister(name=name)
    registry.manager = pm
    return registry


def _broken(
    registry: Registry, name: str, dist: str, error: str, *, refuses_start: bool = False
) -> None:
    log.error("plugin %s (%s) skipped: %s", name, dist, error)
    registry.broken.append(BrokenPlugin(name, dist, error, refuses_start))


def _collect(pm: pluggy.PluginManager, module: ModuleType) -> Offer:
    """Call one plugin's hooks and validate all it registers; a bad registration raises, so a
    bad plugin adds nothing at all."""
    found: Offer = {kind: {} for kind in KINDS}

    def collector(kind: str, cls: type) -> Callable[[Any], None]:
        def register(item: TriggerType | ActionType | Template | Callback | SourceType) -> None:
            if not isinstance(item, cls):
                raise TypeError(f"register_{kind} expects {cls.__name__}, got {item!r}")
            item.validate()
            if item.name in found[kind]:
                raise ValueError(f"{kind[:-1]} {item.name!r} is already registered")
            found[kind][item.name] = item

        return register

    hooks = (
        ("triggers", TriggerType),
        ("actions", ActionType),
        ("templates", Template),
        ("callbacks", Callback),
        ("sources", SourceType),
    )
    for kind, cls in hooks:
        for impl in getattr(pm.hook, f"register_{kind}").get_hookimpls():
            if impl.plugin is module:
                impl.function(register=collector(kind, cls))
    return found


def _with_known_triggers(
    registry: Registry, offers: list[tuple[PluginInfo, Offer]]
) -> list[tuple[PluginInfo, Offer]]:
    """The offers whose templates all use a trigger some plugin offers; the others are broken."""
    offered = {name for _, found in offers for name in found["triggers"]}
    kept = []
    for info, found in offers:
        unknown = [
            (n, t.trigger) for n, t in found["templates"].items() if t.trigger not in offered
        ]
        if unknown:
            name, trigger = unknown[0]
            error = f"ValueError: template {name!r} uses unknown trigger {trigger!r}"
            _broken(registry, info.name, info.distribution, error)
            continue
        kept.append((info, found))
    return kept


def _merge(
    registry: Registry, offers: list[tuple[PluginInfo, Offer]], prefer: Mapping[str, str]
) -> None:
    """Give each name to the one plugin that registers it; a name several register goes to
    the one ``prefer`` names, or to nobody."""
    claims: dict[tuple[str, str], list[tuple[PluginInfo, Any]]] = {}
    for info, found in offers:
        for kind in KINDS:
            for name, item in found[kind].items():
                claims.setdefault((kind, name), []).append((info, item))
    for (kind, name), claimed in claims.items():
        winner = claimed[0] if len(claimed) == 1 else _settle(registry, kind, name, claimed, prefer)
        if winner is not None:
            info, item = winner
            getattr(registry, kind)[name] = item
            getattr(info, kind).append(name)
    for info, _ in offers:
        for kind in KINDS:
            getattr(info, kind).sort()
        registry.plugins.append(info)


def _settle(
    registry: Registry,
    kind: str,
    name: str,
    claimed: list[tuple[PluginInfo, Any]],
    prefer: Mapping[str, str],
) -> tuple[PluginInfo, Any] | None:
    preferred = prefer.get(name)
    picked = [
        (info, item)
        for info, item in claimed
        if preferred is not None and info.claimant().answers_to(preferred)
    ]
    winner = picked[0] if len(picked) == 1 else None
    conflict = Conflict(
        kind[:-1],
        name,
        tuple(info.claimant() for info, _ in claimed),
        preferred,
        winner[0].claimant() if winner else None,
    )
    registry.conflicts.append(conflict)
    log.log(
        logging.WARNING if winner else logging.ERROR, "plugin conflict: %s", conflict.describe()
    )
    return winner
