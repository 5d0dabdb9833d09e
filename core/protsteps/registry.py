"""Registries of components, filled from plugins discovered through pluggy.

A :class:`Catalog` holds one :class:`Registry` per kind. :meth:`Catalog.discover` loads
every entry point of the group ``protsteps`` (built-in plugins included: they are
registered in protsteps' own ``pyproject.toml`` exactly like a third-party package) and asks
each plugin's hooks for its components. A plugin that fails to import or whose hook raises
is recorded in :attr:`Catalog.failures` and the others still load.

The catalog used by the CLI and by :func:`protsteps.build` is made once per process by
:func:`default_catalog`; tests make their own from explicit plugin objects with
:meth:`Catalog.from_plugins`, so nothing leaks between them.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pluggy

from . import hookspecs
from .capabilities import check_declarations, describe_entry
from .components import KINDS, BuildContext, Component, Kind
from .config import check_config_class, closest, fields_of, from_dict
from .errors import (
    CompositionError,
    ConfigError,
    DuplicateComponentError,
    UnknownComponentError,
    build_in_plugin,
)
from .extensions import EXTENSION_KINDS, Extensions
from .presets import Preset, PresetEntry
from .schema import config_schema

__all__ = [
    "ENTRY_POINT_GROUP",
    "Entry",
    "PluginFailure",
    "Registry",
    "Catalog",
    "default_catalog",
    "reset_default_catalog",
]

ENTRY_POINT_GROUP = "protsteps"

_HOOKS: dict[Kind, str] = {
    "featurizer": "protsteps_register_featurizers",
    "encoder": "protsteps_register_encoders",
    "task": "protsteps_register_tasks",
    "teacher": "protsteps_register_teachers",
    "scheme": "protsteps_register_schemes",
}


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered component: what the plugin declared plus who declared it."""

    kind: Kind
    name: str
    factory: Any
    config: type
    description: str
    plugin: str
    version: str
    #: see :class:`~protsteps.components.Component`: declared capabilities (``None``: read
    #: from the built component), needs, and the place in ``auto``
    capabilities: Any = None
    needs: Any = ()
    auto: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The entry for ``protsteps plugins --json``: who registered it, what it requires
        from each batch, its capabilities and needs under its default config, and its config
        as a JSON Schema."""
        return {
            "kind": self.kind,
            "name": self.name,
            "plugin": self.plugin,
            "version": self.version,
            "description": self.description,
            **describe_entry(self),
            "config": [f.as_json() for f in fields_of(self.config)],
            "config_schema": config_schema(self.config),
        }


@dataclasses.dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or whose hook raised."""

    plugin: str
    error: str

    def __str__(self) -> str:
        return f"plugin '{self.plugin}' failed to load: {self.error}"


class Registry:
    """Components of one kind by name. Duplicate names are refused: :meth:`add` raises, and
    :meth:`set_aside` keeps a name that two plugins claim out of use (asking for it raises
    the same error) while the other names stay usable."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        #: name -> the error every use of the name raises
        self.conflicts: dict[str, DuplicateComponentError] = {}

    def add(self, entry: Entry) -> None:
        if entry.kind != self.kind:
            raise ValueError(f"a {entry.kind} cannot go into the {self.kind} registry")
        existing = self._entries.get(entry.name)
        if existing is not None:
            raise DuplicateComponentError(
                f"{self.kind} '{entry.name}' is registered twice: by plugin "
                f"'{existing.plugin}' and by plugin '{entry.plugin}'"
            )
        self._entries[entry.name] = entry

    def set_aside(self, name: str, error: DuplicateComponentError) -> None:
        """Take ``name`` out of use: two plugins register it (``error`` names both)."""
        self._entries.pop(name, None)
        self.conflicts[name] = error

    def get(self, name: str) -> Entry:
        if name in self.conflicts:
            raise self.conflicts[name]
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            hint = closest(name, known)
            did_you_mean = f" Did you mean '{hint}'?" if hint else ""
            listing = ", ".join(known) if known else "none are installed"
            raise UnknownComponentError(
                f"unknown {self.kind} '{name}'.{did_you_mean} Known {self.kind}s: {listing}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)


def _entry_point_names(group: str) -> list[str]:
    names = set()
    for dist in list(importlib.metadata.distributions()):
        for ep in dist.entry_points:
            if ep.group == group:
                names.add(ep.name)
    return sorted(names)


def _plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


class Catalog:
    """The five registries, filled from the plugins registered with a plugin manager.

    Each plugin's hooks are asked when their answer is first needed (the components of all
    five kinds together, the presets, each extension kind), not when the catalog is made: a
    plugin's hook may import torch, and listing the command line's commands asks for the
    plugins' commands alone. :attr:`failures` asks every hook first, so it lists every
    plugin that failed, in the same order whatever was asked before."""

    def __init__(self, pm: pluggy.PluginManager, failures: Iterable[PluginFailure] = ()) -> None:
        self.plugin_manager = pm
        self._failures: list[PluginFailure] = list(failures)
        #: a recorded failure -> the stage that recorded it, which orders :attr:`failures`
        self._stages: dict[int, int] = {}
        self._registries: dict[Kind, Registry] | None = None
        self._presets: dict[str, PresetEntry] = {}
        self._preset_conflicts: dict[str, DuplicateComponentError] = {}
        self._presets_collected = False
        #: plugin name -> (version, distribution name) of the plugins loaded from packages
        self._packages = self._distributions()
        # -- extensions (heads, label formats, metrics, writers, callbacks, commands): see
        # protsteps.extensions; collected like presets, their conflicts listed with the rest
        self.extensions = Extensions()
        self.extensions.collect(pm, self._owner, self._version, self._extension_failed)

    @property
    def failures(self) -> list[PluginFailure]:
        """Plugins that failed to load or whose hook raised or returned junk (every hook is
        asked first)."""
        self.registries  # noqa: B018  (asks the component hooks)
        self._collected_presets()
        self.extensions.collect_pending()
        return self._failures

    def _fail(self, stage: int, failure: PluginFailure) -> None:
        """Record ``failure`` after those of earlier stages: 0 the components, 1 the presets,
        2 + i the extension kind i (loading failures come first)."""
        position = len(self._failures)
        for i, recorded in enumerate(self._failures):
            if self._stages.get(id(recorded), -1) > stage:
                position = i
                break
        self._failures.insert(position, failure)
        self._stages[id(failure)] = stage

    def _extension_failed(self, plugin: str, error: str, kind: str = "") -> None:
        rank = list(EXTENSION_KINDS).index(kind) if kind in EXTENSION_KINDS else len(EXTENSION_KINDS)
        self._fail(2 + rank, PluginFailure(plugin, error))

    @property
    def registries(self) -> dict[Kind, Registry]:
        """kind -> :class:`Registry` (the plugins' component hooks asked on first use)."""
        if self._registries is None:
            self._registries = {kind: Registry(kind) for kind in KINDS}
            self._collect(self._registries)
        return self._registries

    @property
    def presets(self) -> dict[str, PresetEntry]:
        """preset name -> :class:`~protsteps.presets.PresetEntry` (hook asked on first use)."""
        self._collected_presets()
        return self._presets

    @property
    def preset_conflicts(self) -> dict[str, DuplicateComponentError]:
        """preset name -> the error every use of a name that two plugins register raises."""
        self._collected_presets()
        return self._preset_conflicts

    def _collected_presets(self) -> None:
        if not self._presets_collected:
            self._presets_collected = True
            self._collect_presets()

    @classmethod
    def discover(cls, group: str = ENTRY_POINT_GROUP) -> Catalog:
        """Load every plugin of the entry-point ``group`` (isolating the ones that fail)."""
        pm = _plugin_manager()
        failures = []
        for name in _entry_point_names(group):
            try:
                pm.load_setuptools_entrypoints(group, name=name)
            except Exception as exc:
                failures.append(PluginFailure(name, f"{type(exc).__name__}: {exc}"))
        return cls(pm, failures)

    @classmethod
    def from_plugins(cls, plugins: Mapping[str, object]) -> Catalog:
        """A catalog of exactly these plugins (name -> module or object), for tests."""
        pm = _plugin_manager()
        for name, plugin in plugins.items():
            pm.register(plugin, name=name)
        return cls(pm)

    def _distributions(self) -> dict[str, tuple[str, str]]:
        """plugin name -> (version, distribution name) of the plugins loaded from packages."""
        found: dict[str, tuple[str, str]] = {}
        for plugin, dist in self.plugin_manager.list_plugin_distinfo():
            name = self.plugin_manager.get_name(plugin)
            if name is not None:
                found[name] = (dist.version, dist.project_name)
        return found

    def _version(self, plugin: str) -> str:
        return self._packages.get(plugin, ("", ""))[0]

    def _owner(self, plugin: str) -> str:
        """``plugin 'NAME' (package DIST)``, for errors that name who registered what."""
        package = self._packages.get(plugin, ("", ""))[1]
        return f"plugin '{plugin}'" + (f" (package {package})" if package else "")

    def _collect(self, registries: dict[Kind, Registry]) -> None:
        for kind, hook_name in _HOOKS.items():
            hook = getattr(self.plugin_manager.hook, hook_name)
            for impl in hook.get_hookimpls():
                plugin = impl.plugin_name
                try:
                    declared = impl.function()
                    entries = [self._entry(kind, plugin, self._version(plugin), c) for c in declared or []]
                except (ConfigError, TypeError) as exc:
                    self._fail(0, PluginFailure(plugin, str(exc)))
                    continue
                except Exception as exc:
                    self._fail(0, PluginFailure(plugin, f"{type(exc).__name__}: {exc}"))
                    continue
                registry = registries[kind]
                for entry in entries:
                    if entry.name in registry.conflicts:
                        continue  # a third claim: the error names two already
                    if entry.name in registry:
                        other = registry.get(entry.name).plugin
                        error = DuplicateComponentError(
                            f"{kind} '{entry.name}' is registered twice: by {self._owner(other)} and by "
                            f"{self._owner(entry.plugin)}; uninstall one of them"
                        )
                    else:
                        registry.add(entry)
                        continue
                    registry.set_aside(entry.name, error)

    def _collect_presets(self) -> None:
        for impl in self.plugin_manager.hook.protsteps_register_presets.get_hookimpls():
            plugin = impl.plugin_name
            try:
                declared: list[Any] = list(impl.function() or [])  # type: ignore[call-overload]
                for preset in declared:
                    if not isinstance(preset, Preset):
                        raise TypeError(
                            f"hook protsteps_register_presets of plugin '{plugin}' returned {preset!r}, "
                            "expected protsteps.Preset"
                        )
            except Exception as exc:
                self._fail(1, PluginFailure(plugin, f"{type(exc).__name__}: {exc}"))
                continue
            for preset in declared:
                if preset.name in self._preset_conflicts:
                    continue
                existing = self._presets.pop(preset.name, None)
                if existing is None:
                    self._presets[preset.name] = PresetEntry(preset, plugin, self._version(plugin))
                    continue
                self._preset_conflicts[preset.name] = DuplicateComponentError(
                    f"preset '{preset.name}' is registered twice: by {self._owner(existing.plugin)} and "
                    f"by {self._owner(plugin)}; uninstall one of them"
                )

    def preset(self, name: str) -> PresetEntry:
        """The preset registered as ``name``; an unknown name lists the known ones."""
        if name in self.preset_conflicts:
            raise self.preset_conflicts[name]
        if name in self.presets:
            return self.presets[name]
        known = sorted(self.presets)
        hint = closest(name, known)
        did_you_mean = f" Did you mean '{hint}'?" if hint else ""
        listing = ", ".join(known) if known else "none are installed"
        raise UnknownComponentError(f"unknown preset '{name}'.{did_you_mean} Known presets: {listing}")

    @property
    def conflicts(self) -> list[DuplicateComponentError]:
        """One error per name that several plugins register (those names are unusable)."""
        return [
            *(error for registry in self.registries.values() for error in registry.conflicts.values()),
            *self.preset_conflicts.values(),
            *self.extensions.all_conflicts(),
        ]

    @staticmethod
    def _entry(kind: Kind, plugin: str, version: str, component: Component) -> Entry:
        if not isinstance(component, Component):
            raise TypeError(
                f"hook {_HOOKS[kind]} of plugin '{plugin}' returned {component!r}, "
                "expected protsteps.Component"
            )
        check_config_class(component.config, f"{kind} '{component.name}' of plugin '{plugin}'")
        check_declarations(kind, component, f"{kind} '{component.name}' of plugin '{plugin}'")
        return Entry(
            kind=kind,
            name=component.name,
            factory=component.factory,
            config=component.config,
            description=component.description,
            plugin=plugin,
            version=version,
            capabilities=component.capabilities,
            needs=component.needs,
            auto=component.auto,
        )

    def registry(self, kind: str) -> Registry:
        if kind not in self.registries:
            hint = closest(kind, list(KINDS))
            did_you_mean = f" Did you mean '{hint}'?" if hint else ""
            raise UnknownComponentError(f"unknown kind '{kind}'.{did_you_mean} Kinds: {', '.join(KINDS)}")
        return self.registries[kind]  # type: ignore[index]

    def get(self, kind: str, name: str) -> Entry:
        """The entry registered as ``name`` for ``kind``; errors list the known names (and
        the plugins that failed to load, which might have provided it), and when ``name``
        is a value of some component's setting (an ESM-2 model name given as the teacher),
        the command that sets it."""
        registry = self.registry(kind)
        try:
            return registry.get(name)
        except UnknownComponentError as exc:
            extra = [self.setting_hint(kind, name) or ""]
            if self.failures:
                failed = ", ".join(sorted({f.plugin for f in self.failures}))
                extra.append(f"Plugins that failed to load (`protsteps plugins` says why): {failed}")
            extra = [text for text in extra if text]
            if not extra:
                raise
            original = str(exc.args[0]) if exc.args else str(exc)
            raise UnknownComponentError(". ".join([original, *extra])) from None

    def setting_hint(self, kind: str, value: str) -> str | None:
        """When ``value`` (given as a ``kind`` name) is one of the choices of a component's
        setting, the options that select that component and set it, e.g. ``--teacher esm
        --set teacher.model=esm2_t6_8M_UR50D``; components of ``kind`` first, at most two.
        A preset's name says ``--preset NAME``."""
        if value in self.presets:
            return f"'{value}' is a preset (a whole run file): use --preset {value}"
        matches = [
            (entry, field.name)
            for entry in self.entries()
            for field in fields_of(entry.config)
            if field.choices and value in field.choices
        ]
        same_kind = [m for m in matches if m[0].kind == kind]
        matches = (same_kind or matches)[:2]
        if not matches:
            return None
        described = " or ".join(f"{entry.kind} {entry.name}'s {field}" for entry, field in matches)
        commands = " or ".join(
            f"--task {entry.name} --set tasks.{entry.name}.{field}={value}"
            if entry.kind == "task"
            else f"--{entry.kind} {entry.name} --set {entry.kind}.{field}={value}"
            for entry, field in matches
        )
        return f"'{value}' is a value of {described}: use {commands}"

    def taking_settings(self, kind: str, settings: Mapping[str, Any]) -> list[str]:
        """The names of the ``kind`` components whose config accepts ``settings`` (every key
        a setting, every value valid), e.g. the teachers that a ``model = ...`` fits. When a
        value is one of a component's listed choices (``esm2_t6_8M_UR50D`` for ``esm``'s
        ``model``), only the components that list it are named."""
        scored = []
        for entry in self.registry(kind):
            try:
                from_dict(entry.config, settings, section=kind)
            except Exception:  # any refusal: this component does not fit
                continue
            listed = sum(
                1
                for field in fields_of(entry.config)
                if field.name in settings and field.choices and settings[field.name] in field.choices
            )
            scored.append((listed, entry.name))
        best = max((listed for listed, _ in scored), default=0)
        return [name for listed, name in scored if listed == best]

    def entries(self, kind: str | None = None) -> list[Entry]:
        kinds = [kind] if kind is not None else list(KINDS)
        return [entry for k in kinds for entry in self.registry(k)]

    def make_config(self, kind: str, name: str, values: Mapping[str, Any] | None = None) -> Any:
        """The validated config dataclass of a component from plain values."""
        entry = self.get(kind, name)
        return from_dict(entry.config, dict(values or {}), section=f"[{kind}] ({name})")

    def build(
        self,
        kind: str,
        name: str,
        config: Any = None,
        context: BuildContext | None = None,
        **values: Any,
    ) -> Any:
        """Construct a component: validate its config, call its factory, check that the
        batch attributes it requires are provided by the featurizer named in ``context``.

        ``config`` may be an instance of the component's config class; otherwise the config
        is made from ``values``. An exception other than a
        :class:`~protsteps.errors.ProtstepsError` raised by the factory becomes a
        :class:`~protsteps.errors.CompositionError` naming the kind, the name and the plugin,
        with the original type and message, chained to it (``--debug`` prints both).
        """
        entry = self.get(kind, name)
        if config is None:
            config = self.make_config(kind, name, values)
        elif values:
            raise TypeError("pass either a config object or keyword values, not both")
        elif not isinstance(config, entry.config):
            raise ConfigError(
                f"{kind} '{name}' expects a {entry.config.__name__} config, got {type(config).__name__}"
            )
        context = context or BuildContext()
        check_requirements(kind, name, getattr(entry.factory, "requires", None), context)
        component = build_in_plugin(f"{kind} '{name}'", entry.plugin, entry.factory, config, context)
        check_requirements(kind, name, getattr(component, "requires", None), context)
        return component


def check_requirements(kind: str, name: str, requires: Any, context: BuildContext) -> None:
    """Raise :class:`CompositionError` when a component needs batch attributes that the
    featurizer of ``context`` does not provide."""
    if requires is None or context.provides is None:
        return
    missing = sorted(set(requires) - set(context.provides))
    if missing:
        featurizer = f"featurizer '{context.featurizer}'" if context.featurizer else "the featurizer"
        provided = ", ".join(sorted(context.provides)) or "nothing"
        raise CompositionError(
            f"{kind} '{name}' needs {', '.join(missing)} from each batch, which {featurizer} "
            f"does not provide (it provides: {provided})"
        )


_DEFAULT: Catalog | None = None


def default_catalog() -> Catalog:
    """The catalog of every installed plugin, discovered on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Catalog.discover()
    return _DEFAULT


def reset_default_catalog() -> None:
    """Forget the discovered catalog (after installing a plugin in the same process)."""
    global _DEFAULT
    _DEFAULT = None
