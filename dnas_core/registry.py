"""Registries: one per component kind, filled by plugins through the register hooks.

``list(pattern)``, ``get(name)`` with close-match suggestions, and
``create(name, config)`` that validates the config against the component's model.
Registering a name twice is an error that names both plugins (timm only warns).
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError, create_model

from .components import Component, ComponentConfig
from .errors import ComponentNotFoundError, ManifestError, PluginError, first_line

T = TypeVar("T", bound=Component)

#: The component kinds, in the order ``dnas plugins`` and ``dnas schema`` show them.
#: Each maps to the hook that fills it and the manifest field that selects it.
KINDS: dict[str, str] = {
    "task": "dnas_register_tasks",
    "space": "dnas_register_search_spaces",
    "strategy": "dnas_register_strategies",
    "generator": "dnas_register_generators",
    "evaluator": "dnas_register_evaluators",
    "backend": "dnas_register_backends",
    "exporter": "dnas_register_exporters",
    "callback": "dnas_register_callbacks",
}


@dataclass
class Entry(Generic[T]):
    """One registered component and where it came from."""

    name: str
    cls: type[T]
    plugin: str
    distribution: str
    #: ``cls.Config`` with the ``type: Literal[name]`` discriminator added.
    config_model: type[BaseModel] = field(repr=False, default=None)  # type: ignore[assignment]


class Registry(Generic[T]):
    """Components of one kind, by name."""

    def __init__(self, kind: str, base: type[T] | None = None):
        self.kind = kind
        self.base = base
        self._entries: dict[str, Entry[T]] = {}

    # -- filling ------------------------------------------------------------------
    def register(self, cls: type[T], plugin: str = "<direct>", distribution: str = "<local>") -> type[T]:
        who = f"plugin {plugin!r} ({distribution})"
        if not isinstance(cls, type):
            raise PluginError(f"{who} registers {cls!r} (a {type(cls).__name__}) as a {self.kind}: the register "
                              "hooks return component classes, not instances or names")
        name = getattr(cls, "name", "")
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"plugin {plugin!r} ({distribution}) registers {self.kind} class "
                f"{cls.__qualname__} without a `name`"
            )
        if self.base is not None and not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginError(
                f"plugin {plugin!r} ({distribution}) registers {cls!r} as a {self.kind}, "
                f"but it does not subclass {self.base.__module__}.{self.base.__qualname__}"
            )
        if name in self._entries:
            old = self._entries[name]
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by plugin {old.plugin!r} "
                f"(distribution {old.distribution}) and by plugin {plugin!r} "
                f"(distribution {distribution}); disable one with DNAS_DISABLE_PLUGINS"
            )
        config = getattr(cls, "Config", None)
        if not (isinstance(config, type) and issubclass(config, ComponentConfig)):
            raise PluginError(f"{who}: {self.kind} {name!r} has Config {config!r}, which does not subclass "
                              "dnas_core.ComponentConfig (a pydantic model)")
        if "type" in config.model_fields:
            raise PluginError(f"{who}: {self.kind} {name!r} declares a config field named 'type'; that key selects "
                              "the component in a manifest, so the field would never be set. Rename it")
        try:
            model = create_model(
                f"{cls.__name__}Manifest",
                __base__=config,
                type=(Literal[name], ...),  # type: ignore[valid-type]
            )
            # a field type pydantic cannot describe (e.g. torch.dtype) would otherwise fail
            # only later, when a run saves its manifest or `dnas schema` runs
            model.model_json_schema()
        except Exception as exc:  # noqa: BLE001 - re-raised with the plugin named
            first = first_line(exc, type(exc).__name__)
            raise PluginError(f"{who}: the config of {self.kind} {name!r} cannot be used in a manifest: "
                              f"{type(exc).__name__}: {first}; use JSON-compatible field types "
                              "(numbers, strings, lists, dicts, Literal, pydantic models)") from exc
        model.__doc__ = (cls.__doc__ or cls.description or "").strip() or None
        self._entries[name] = Entry(name, cls, plugin, distribution, model)
        return cls

    # -- lookup -------------------------------------------------------------------
    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.list()]

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise ComponentNotFoundError(self._unknown_message(name)) from None

    def get(self, name: str) -> type[T]:
        return self.entry(name).cls

    def _unknown_message(self, name: str) -> str:
        known = self.list()
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
        msg = f"unknown {self.kind} {name!r}"
        if close:
            msg += f"; did you mean {', '.join(repr(c) for c in close)}?"
        if known:
            msg += f" (installed: {', '.join(known)})"
        else:
            msg += f" (no {self.kind} plugin is installed)"
        from .plugin_manager import DISABLE_ENV, blocked_names

        if blocked_names():  # the component may be there, in a plugin switched off
            msg += f"; {DISABLE_ENV} disables the plugins {', '.join(sorted(blocked_names()))}"
        return msg

    def validate_config(self, name: str, config: dict[str, Any] | BaseModel | None, where: str = "") -> BaseModel:
        """Validate a config dict for component ``name``; errors name the field."""
        entry = self.entry(name)
        if isinstance(config, BaseModel):
            config = config.model_dump()
        data = dict(config or {})
        data.pop("type", None)
        try:
            return entry.cls.Config.model_validate(data)
        except ValidationError as exc:
            raise ManifestError(format_validation_error(exc, prefix=where or self.kind)) from None

    def create(self, name: str, config: dict[str, Any] | BaseModel | None = None, **kwargs: Any) -> T:
        cfg = self.validate_config(name, config)
        return self.get(name)(cfg, **kwargs)


class Registries:
    """All registries of one plugin manager, one attribute per kind."""

    def __init__(self) -> None:
        from .backend import Backend
        from .callback import Callback
        from .evaluator import Evaluator
        from .exporter import Exporter
        from .generator import ArchitectureGenerator
        from .space import SearchSpace
        from .strategy import Strategy
        from .task import Task

        bases = {
            "task": Task,
            "space": SearchSpace,
            "strategy": Strategy,
            "generator": ArchitectureGenerator,
            "evaluator": Evaluator,
            "backend": Backend,
            "exporter": Exporter,
            "callback": Callback,
        }
        self._by_kind: dict[str, Registry[Any]] = {k: Registry(k, bases[k]) for k in KINDS}

    def __getitem__(self, kind: str) -> Registry[Any]:
        return self._by_kind[kind]

    def items(self):
        return self._by_kind.items()

    @property
    def tasks(self) -> Registry[Any]:
        return self._by_kind["task"]

    @property
    def spaces(self) -> Registry[Any]:
        return self._by_kind["space"]

    @property
    def strategies(self) -> Registry[Any]:
        return self._by_kind["strategy"]

    @property
    def generators(self) -> Registry[Any]:
        return self._by_kind["generator"]

    @property
    def evaluators(self) -> Registry[Any]:
        return self._by_kind["evaluator"]

    @property
    def backends(self) -> Registry[Any]:
        return self._by_kind["backend"]

    @property
    def exporters(self) -> Registry[Any]:
        return self._by_kind["exporter"]

    @property
    def callbacks(self) -> Registry[Any]:
        return self._by_kind["callback"]


def format_validation_error(exc: ValidationError, prefix: str = "", strip: set[tuple] | None = None) -> str:
    """One line per problem, each naming the dotted path of the field at fault.

    ``strip`` lists location prefixes whose last element is a discriminator tag that
    pydantic inserted and the user never wrote; it is removed from the path.
    """
    parts = []
    for err in exc.errors():
        raw = list(err.get("loc", ()))
        for pre in strip or ():
            n = len(pre)
            if tuple(raw[:n]) == pre:
                del raw[n - 1]
                break
        loc = [str(p) for p in raw]
        path = ".".join([prefix, *loc] if prefix else loc) or "<root>"
        msg = err.get("msg", "invalid value")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field (not allowed here)"
        parts.append(f"{path}: {msg}")
    return "; ".join(parts)
