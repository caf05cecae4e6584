"""Building the plugin manager: specs, block list, entry points, check.

Built in a function, never at import time, so that tests and embedding programs can
build as many isolated managers as they like. The order:

1. ``PluginManager("dnas")`` with the specs of :mod:`dnas_core.hookspecs`;
2. the block list from ``DNAS_DISABLE_PLUGINS`` (comma-separated entry-point names);
3. every entry point of the ``dnas.plugins`` group, dnas's own built-ins included,
   unless ``DNAS_DISABLE_PLUGIN_AUTOLOAD`` is set; a plugin that fails to import is an
   error naming its distribution and entry point, and so is an entry-point name that
   two distributions use;
4. plugins passed by the caller (tests, embedding programs);
5. ``check_pending()``: a hook implementation with no matching spec is an error;
6. the registries are filled from the registration hooks.
"""

from __future__ import annotations

import importlib.metadata as md
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .errors import PluginError, StopRun
from .markers import ENTRY_POINT_GROUP, PROJECT_NAME
from .registry import KINDS, Registries

DISABLE_ENV = "DNAS_DISABLE_PLUGINS"
NO_AUTOLOAD_ENV = "DNAS_DISABLE_PLUGIN_AUTOLOAD"


@dataclass
class PluginInfo:
    """Where a registered plugin comes from, for ``dnas plugins`` and error messages."""

    name: str
    module: str
    distribution: str
    version: str
    entry_point: str = ""
    components: dict[str, list[str]] = field(default_factory=dict)


class DnasPluginManager(pluggy.PluginManager):
    """A pluggy manager that also holds the registries and plugin provenance."""

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.registries = Registries()
        self.info: dict[str, PluginInfo] = {}

    def describe(self, plugin_name: str) -> str:
        info = self.info.get(plugin_name)
        if info is None:
            return f"plugin {plugin_name!r}"
        where = f"distribution {info.distribution} {info.version}"
        if info.entry_point:
            where += f", entry point {info.entry_point!r}"
        return f"plugin {plugin_name!r} ({where})"

    def call_each(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every implementation of a hook separately, so that a result or an
        exception can be attributed to its plugin. A plugin whose hook raises is named
        in the error; the others are not affected by it."""
        hook = getattr(self.hook, hook_name)
        out = []
        for impl in reversed(hook.get_hookimpls()):
            try:
                out.append((impl.plugin_name, impl.function(**{a: kwargs[a] for a in impl.argnames})))
            except Exception as exc:  # noqa: BLE001 - re-raised with the plugin named
                raise PluginError(
                    f"{self.describe(impl.plugin_name)} failed in {hook_name}: {type(exc).__name__}: {exc}; "
                    f"disable it with {DISABLE_ENV}={impl.plugin_name}"
                ) from exc
        return out

    def notify(self, hook_name: str, **kwargs: Any) -> list[PluginError]:
        """Call an observer hook on every plugin; a plugin that raises is reported and
        skipped so that the others (and the run) keep working. Returns the errors."""
        hook = getattr(self.hook, hook_name)
        errors = []
        for impl in reversed(hook.get_hookimpls()):
            try:
                impl.function(**{a: kwargs[a] for a in impl.argnames})
            except StopRun:
                raise
            except Exception as exc:  # noqa: BLE001
                errors.append(
                    PluginError(f"{self.describe(impl.plugin_name)} failed in {hook_name}: {type(exc).__name__}: {exc}")
                )
        return errors

    def fill_registries(self) -> None:
        for kind, hook_name in KINDS.items():
            registry = self.registries[kind]
            for plugin_name, result in self.call_each(hook_name):
                if result is None:
                    continue
                if not isinstance(result, (list, tuple)):
                    raise PluginError(f"{self.describe(plugin_name)}: {hook_name} must return a list of classes")
                info = self.info.get(plugin_name)
                dist = f"{info.distribution} {info.version}" if info else "<local>"
                for cls in result:
                    registry.register(cls, plugin=plugin_name, distribution=dist)
                    if info is not None:
                        info.components.setdefault(kind, []).append(cls.name)


def blocked_names() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {n.strip() for n in raw.split(",") if n.strip()}


def _entry_points() -> list[md.EntryPoint]:
    return list(md.entry_points(group=ENTRY_POINT_GROUP))


def get_plugin_manager(extra_plugins: Iterable[Any] = (), autoload: bool | None = None) -> DnasPluginManager:
    """Build a fresh plugin manager with every installed plugin loaded and the
    registries filled. ``extra_plugins`` are modules or objects registered after the
    installed ones (their ``__name__``, else the class name, is the plugin name)."""
    pm = DnasPluginManager()
    for name in blocked_names():
        pm.set_blocked(name)
    if autoload is None:
        autoload = not os.environ.get(NO_AUTOLOAD_ENV)
    if autoload:
        _load_entry_points(pm)
    for plugin in extra_plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        if pm.is_blocked(name):
            continue
        pm.register(plugin, name=name)
        module = getattr(plugin, "__name__", type(plugin).__module__)
        pm.info.setdefault(name, PluginInfo(name, module, "<local>", "", ""))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:  # e.g. a misspelt hook name: say which plugin
        name = pm.get_name(exc.plugin) if exc.plugin is not None else None
        raise PluginError(f"{pm.describe(name) if name else 'a plugin'}: {exc}; check the hook names against "
                          f"dnas_core.hookspecs, or disable it with {DISABLE_ENV}={name}") from exc
    pm.fill_registries()
    return pm


def _load_entry_points(pm: DnasPluginManager) -> None:
    seen: dict[str, PluginInfo] = {}
    for ep in _entry_points():
        dist = ep.dist
        dist_name = dist.metadata["Name"] if dist is not None else "<unknown>"
        version = dist.version if dist is not None else ""
        if pm.is_blocked(ep.name):  # blocked names are skipped before anything else
            continue
        if ep.name in seen:
            other = seen[ep.name]
            if other.distribution == dist_name and other.module == ep.value:
                continue  # the same distribution seen twice on sys.path
            raise PluginError(
                f"two distributions register a dnas plugin named {ep.name!r}: "
                f"{other.distribution} {other.version} ({other.module}) and {dist_name} {version} ({ep.value}); "
                f"uninstall one of them ({DISABLE_ENV}={ep.name} would switch off both)"
            )
        info = PluginInfo(ep.name, ep.value, dist_name, version, f"{ENTRY_POINT_GROUP}:{ep.name}")
        seen[ep.name] = info
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - re-raised with the distribution named
            raise PluginError(
                f"plugin {ep.name!r} from distribution {dist_name} {version} (entry point "
                f"{ENTRY_POINT_GROUP}:{ep.name} = {ep.value}) failed to import: "
                f"{type(exc).__name__}: {exc}; disable it with {DISABLE_ENV}={ep.name}"
            ) from exc
        try:
            pm.register(plugin, name=ep.name)
        except pluggy.PluginValidationError as exc:  # a hook implementation with wrong arguments
            raise PluginError(f"plugin {ep.name!r} from distribution {dist_name} {version}: {exc}; "
                              f"disable it with {DISABLE_ENV}={ep.name}") from exc
        pm.info[ep.name] = info
