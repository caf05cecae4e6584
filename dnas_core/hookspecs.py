"""The hook specifications of dnas: every way a plugin can extend it.

A plugin is a module or object with functions marked ``@dnas_core.hookimpl`` whose
names match the specs below. Plugins are found through the ``dnas.plugins``
entry-point group; dnas's own tasks, spaces, strategies, backends and exporters are
plugins on these same hooks.

The specs come in two groups:

* **Registration** (called once, when the plugin manager is built): each returns a
  list of component classes. Every plugin's results are collected (1:N); a name
  registered by two plugins is an error that names both distributions.
* **Run lifecycle** (called by the orchestrator during ``dnas run``): observers that
  loggers and reporters implement. Their return values are ignored. Callback
  components selected in a manifest's ``callbacks:`` list are registered as plugins
  for the length of that run, so they implement these same hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .markers import hookspec

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from .backend import Backend
    from .callback import Callback
    from .context import RunContext
    from .evaluator import Evaluator
    from .exporter import Exporter
    from .generator import ArchitectureGenerator
    from .genotype import Genotype
    from .space import SearchSpace
    from .strategy import Strategy
    from .task import Task


# ---------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------


@hookspec
def dnas_register_tasks() -> list[type[Task]]:
    """Register task classes.

    Called once when the plugin manager is built. Return a list of
    :class:`dnas_core.Task` subclasses; each must set a unique ``name`` (what a
    manifest writes under ``task: {type: ...}``) and a ``Config`` pydantic model.
    A task owns its data (loading, reproducible splits), its input/output spec, the
    stem and head that adapt a searched body to its data, its loss and metrics.
    """


@hookspec
def dnas_register_search_spaces() -> list[type[SearchSpace]]:
    """Register search-space classes.

    Called once when the plugin manager is built. Return a list of
    :class:`dnas_core.SearchSpace` subclasses. A space builds the supernet for a task,
    derives a discrete genotype from it, builds a stand-alone network from a genotype,
    samples random genotypes and encodes genotypes as graphs. Manifests select it with
    ``space: {type: ...}``.
    """


@hookspec
def dnas_register_strategies() -> list[type[Strategy]]:
    """Register search-strategy classes.

    Called once when the plugin manager is built. Return a list of
    :class:`dnas_core.Strategy` subclasses: the search loop (DARTS, GDAS, generator-based
    search, ...). Manifests select one with ``strategy: {type: ...}``.
    """


@hookspec
def dnas_register_generators() -> list[type[ArchitectureGenerator]]:
    """Register architecture-generator classes (VAE, GAN, ...).

    Called once when the plugin manager is built. Return a list of
    :class:`dnas_core.ArchitectureGenerator` subclasses. Generators learn a distribution
    over the graph encodings that every search space provides, so they apply to any
    space. Generator-based strategies select one by name.
    """


@hookspec
def dnas_register_evaluators() -> list[type[Evaluator]]:
    """Register evaluator classes: how a query-based search scores a genotype.

    Called once when the plugin manager is built. Return a list of
    :class:`dnas_core.Evaluator` subclasses (a tabular benchmark lookup, a
    weight-sharing supernet, short training from scratch, ...). Query-based strategies
    select one in their config (``strategy: {evaluator: {type: ...}}``). An evaluator
    caches its answers by genotype hash and counts the queries it answered.
    """


@hookspec
def dnas_register_backends() -> list[type[Backend]]:
    """Register hardware-backend classes.

    Called once when the plugin manager is built. Return a list of
    :class:`dnas_core.Backend` subclasses. A backend chooses the device, the numeric
    precision and measures the latency of a module at an input shape. Manifests select
    one with ``backend: {type: ...}``.
    """


@hookspec
def dnas_register_exporters() -> list[type[Exporter]]:
    """Register model-exporter classes (ONNX, ...).

    Called once when the plugin manager is built. Return a list of
    :class:`dnas_core.Exporter` subclasses. An exporter writes the derived network (never
    the supernet) to a file and verifies the file against the torch model. Manifests
    select one with ``export: {type: ...}``.
    """


@hookspec
def dnas_register_callbacks() -> list[type[Callback]]:
    """Register callback (logger) classes.

    Called once when the plugin manager is built. Return a list of
    :class:`dnas_core.Callback` subclasses. A manifest lists the callbacks of a run under
    ``callbacks:``; each listed one is instantiated with its config and registered as a
    plugin for the length of the run, so it receives the run-lifecycle hooks below.
    """


# ---------------------------------------------------------------------------------
# Run lifecycle
# ---------------------------------------------------------------------------------


@hookspec
def dnas_run_start(run: RunContext) -> None:
    """Called once when a run starts, after its directory and components exist.

    ``run`` is the :class:`dnas_core.RunContext`: the validated manifest, the run
    directory, the task, space, strategy and backend instances. On a resumed run this
    is called again, with ``run.resumed`` true. Return value ignored.
    """


@hookspec
def dnas_stage_start(run: RunContext, stage: str) -> None:
    """Called when a pipeline stage begins.

    ``stage`` is one of ``search``, ``derive``, ``retrain``, ``evaluate``, ``export``,
    ``report``. Return value ignored.
    """


@hookspec
def dnas_epoch_end(run: RunContext, stage: str, epoch: int, metrics: dict[str, float]) -> None:
    """Called after each epoch of the ``search`` and ``retrain`` stages.

    ``epoch`` counts from 0; ``metrics`` maps names (``train_loss``, ``val_accuracy``,
    ...) to floats, the same record that is appended to ``metrics.jsonl``. During search
    it may also hold the architecture weights as ``arch/<edge>/<op>`` entries.
    Return value ignored.
    """


@hookspec
def dnas_search_end(run: RunContext, genotype: Genotype, summary: dict[str, Any]) -> None:
    """Called once when the search stage has produced its genotype.

    ``genotype`` is the derived discrete architecture; ``summary`` holds what the
    strategy reports about its search (epochs, final architecture weights, ...).
    Return value ignored.
    """


@hookspec
def dnas_stage_end(run: RunContext, stage: str, seconds: float, info: dict[str, Any]) -> None:
    """Called when a pipeline stage has finished.

    ``seconds`` is its wall time and ``info`` what it produced that is worth logging
    (for ``evaluate`` the test metrics, for ``export`` the verification result).
    Return value ignored.
    """


@hookspec
def dnas_run_end(run: RunContext, status: str, result: dict[str, Any]) -> None:
    """Called once when a run ends, whether it succeeded or not.

    ``status`` is ``"completed"``, ``"failed"`` or ``"interrupted"`` (Ctrl-C or SIGTERM;
    the run can be resumed); ``result`` is what was written to ``result.json`` (otherwise
    the error under ``"error"``). Return value ignored.
    """
