"""dnas core: hook specs, registries, manifests, abstractions and the orchestrator.

The core hard-wires no task, space, strategy, backend or exporter: all of them,
dnas's own included, are plugins found through the ``dnas.plugins`` entry points.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .backend import Backend, Latency
from .callback import Callback
from .components import Component, ComponentConfig
from .context import RunContext
from .errors import (
    ComponentNotFoundError,
    DataError,
    DnasError,
    IncompatibleError,
    ManifestError,
    PluginError,
    RunFailed,
    UsageError,
)
from .evaluator import Evaluator
from .exporter import Exporter
from .generator import ArchitectureGenerator
from .genotype import Genotype, GraphEncoding
from .markers import hookimpl, hookspec
from .plugin_manager import get_plugin_manager
from .space import LatencyOp, MixWeights, Network, SearchSpace, Supernet
from .strategy import SearchOutcome, Strategy
from .task import IOSpec, Task, TaskData, data_root

__all__ = [
    "__version__",
    "data_root",
    "ArchitectureGenerator",
    "Backend",
    "Callback",
    "Component",
    "ComponentConfig",
    "ComponentNotFoundError",
    "DataError",
    "DnasError",
    "Evaluator",
    "Exporter",
    "Genotype",
    "GraphEncoding",
    "IOSpec",
    "IncompatibleError",
    "Latency",
    "LatencyOp",
    "ManifestError",
    "MixWeights",
    "Network",
    "PluginError",
    "RunContext",
    "RunFailed",
    "SearchOutcome",
    "SearchSpace",
    "Strategy",
    "Supernet",
    "Task",
    "TaskData",
    "UsageError",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
]
