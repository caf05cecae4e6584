"""What every registrable component has in common: a name and a config model.

A component class declares

* ``name``: the string a manifest uses in its ``type`` field;
* ``Config``: a pydantic model (``extra="forbid"``) of its settings;
* ``__init__(self, config)``: it receives a validated ``Config`` instance.

The registry adds the ``type`` discriminator to ``Config`` itself, so a component
author never writes it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class ComponentConfig(BaseModel):
    """Base of every component's config: unknown keys are an error, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=False, protected_namespaces=())


class Component:
    """Base class of tasks, search spaces, strategies, backends, exporters, ..."""

    #: The name used by manifests (``type: <name>``) and the CLI.
    name: ClassVar[str] = ""
    #: One-line description shown by ``dnas plugins``.
    description: ClassVar[str] = ""
    #: The settings this component accepts.
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig

    def __init__(self, config: ComponentConfig | None = None, **overrides: Any):
        if config is None:
            config = self.Config(**overrides)
        elif overrides:
            config = config.model_copy(update=overrides)
        self.config = config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
