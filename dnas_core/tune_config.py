"""The ``tune:`` section of a manifest: what ``dnas tune`` searches over.

Kept apart from :mod:`dnas_core.tune` so that validating a manifest never imports
Optuna. Example::

    tune:
      params:
        strategy.arch_lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
        strategy.batch_size: {type: categorical, choices: [32, 64]}
      objectives:
        - {metric: search.val_accuracy, direction: maximize}
      sampler: {type: tpe}
      pruner: {type: median}
      n_trials: 20
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Scalar = Union[None, bool, int, float, str]
#: Objectives that are fields of a run's result.json, not per-stage metrics.
RESULT_FIELDS = ("latency_ms", "params", "wall_seconds")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class FloatParam(_Section):
    """A float drawn from [low, high] (log-uniformly with ``log: true``)."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: Optional[float] = Field(None, gt=0, description="discretisation step (not with log)")

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_range(self.low, self.high, self.log, self.step)
        return self


class IntParam(_Section):
    """An integer drawn from [low, high]."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_range(self.low, self.high, self.log, self.step if self.step != 1 else None)
        return self


class CategoricalParam(_Section):
    """One of a list of values (numbers, strings, booleans or null)."""

    type: Literal["categorical"]
    choices: list[Scalar] = Field(..., min_length=1)


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if low > high:
        raise ValueError(f"low ({low}) must not exceed high ({high})")
    if log and low <= 0:
        raise ValueError(f"log: true needs low > 0 (got {low})")
    if log and step is not None:
        raise ValueError("step cannot be combined with log: true")


Param = Annotated[Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")]


class Objective(_Section):
    """One value to optimise, read from the finished trial run.

    ``metric`` names: ``search.<key>`` / ``retrain.<key>`` (the last epoch record of
    that stage in ``metrics.jsonl``, e.g. ``search.val_accuracy``), ``test.<key>`` (the
    held-out test metrics; tuning on them leaks the test set), or a top-level result
    field: ``latency_ms``, ``params``, ``wall_seconds``.
    """

    metric: str = Field(..., min_length=1)
    direction: Literal["maximize", "minimize"] = "maximize"

    @field_validator("metric")
    @classmethod
    def _known_form(cls, v: str) -> str:
        stage, dot, key = v.partition(".")
        if (dot and stage and key) or v in RESULT_FIELDS:  # <stage>.<key>: a plugin may log stages of its own
            return v
        raise ValueError(f"{v!r} is neither <stage>.<key> (search.val_accuracy, retrain.train_loss, "
                         f"test.accuracy) nor a result field ({', '.join(RESULT_FIELDS)})")


class SamplerConfig(_Section):
    type: Literal["auto", "tpe", "random", "gp", "nsga2"] = Field(
        "auto", description="auto: TPE for one objective, NSGA-II for several"
    )
    seed: Optional[int] = Field(None, ge=0, description="default: the manifest seed (each worker derives its own)")
    n_startup_trials: int = Field(5, ge=0, description="random trials before TPE/GP model the objective")
    population_size: int = Field(20, ge=2, description="NSGA-II population")


class PrunerConfig(_Section):
    type: Literal["none", "median", "hyperband", "threshold"] = "median"
    n_startup_trials: int = Field(3, ge=0, description="median: trials that are never pruned")
    n_warmup_steps: int = Field(1, ge=0, description="median: epochs before a trial may be pruned")
    min_resource: int = Field(1, ge=1, description="hyperband: epochs every trial gets")
    reduction_factor: int = Field(3, ge=2, description="hyperband: keep 1/reduction_factor per rung")
    lower: Optional[float] = Field(None, description="threshold: prune when the metric falls below this")
    upper: Optional[float] = Field(None, description="threshold: prune when the metric rises above this")

    @model_validator(mode="after")
    def _check(self) -> PrunerConfig:
        if self.type == "threshold" and self.lower is None and self.upper is None:
            raise ValueError("threshold pruner: set lower and/or upper")
        return self


class TuneConfig(_Section):
    """Optuna tuning of a manifest's hyperparameters (``dnas tune``)."""

    params: dict[str, Param] = Field(
        ..., min_length=1, description="dotted manifest path -> distribution, e.g. strategy.arch_lr"
    )
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(metric="search.val_accuracy", direction="maximize")], min_length=1
    )
    prune_metric: Optional[str] = Field(
        None,
        description="per-epoch search metric reported to the pruner (default: the first objective's "
        "search.<key> / retrain.<key>, val_<key> for test.<key>; a result field such as params has none, "
        "and its trials are not pruned); must improve in the objective's direction",
    )
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    n_trials: int = Field(20, ge=1, description="trial budget of the study (all workers together)")
    timeout_s: Optional[float] = Field(None, gt=0, description="each worker stops starting trials after this")
    study_name: Optional[str] = Field(None, description="default: the manifest name")
    storage: Optional[str] = Field(
        None, description="Optuna RDB URL or journal file path; default: a journal file in the study directory"
    )
    study_dir: Optional[str] = Field(None, description="default: <output.root>/tune-<study name>")
    overrides: list[str] = Field(default_factory=list, description="fixed dotted overrides applied to every trial")
    vary_seed: bool = Field(False, description="give each trial its own seed (seed + trial number)")
    heartbeat_s: int = Field(10, ge=1, description="seconds between heartbeats of a running trial")
    grace_s: Optional[int] = Field(None, ge=1, description="a trial without heartbeat this long is failed (default 3x heartbeat)")
    max_retry: int = Field(2, ge=0, description="times a killed worker's trial is retried")

    @model_validator(mode="after")
    def _check(self) -> TuneConfig:
        for key in self.params:
            parts = key.split(".")
            if not all(parts):
                raise ValueError(f"params: {key!r} is not a dotted manifest path")
            if parts[0] in ("tune", "name", "output"):
                raise ValueError(f"params: {key!r} cannot be tuned (the {parts[0]} section belongs to the study)")
        if len(self.objectives) > 1 and self.pruner.type != "none":
            raise ValueError("pruner: Optuna cannot prune multi-objective studies; set pruner: {type: none}")
        return self

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def resolved_prune_metric(self) -> str | None:
        """The per-epoch search metric the pruner sees. It must move the way the first
        objective does: ``search.<key>`` and ``retrain.<key>`` give ``<key>``,
        ``test.<key>`` the same metric on the validation split (``val_<key>``). A result
        field (``params``, ``latency_ms``, ``wall_seconds``) has no per-epoch
        counterpart: None, and the trials are not pruned unless ``prune_metric`` names
        one (pruning on validation accuracy or loss would cut exactly the small, fast
        networks such an objective favours)."""
        if self.prune_metric:
            return self.prune_metric
        stage, _, key = self.objectives[0].metric.partition(".")
        if key and stage in ("search", "retrain"):
            return key
        if key and stage == "test":
            return f"val_{key}"
        return None


__all__ = ["TuneConfig", "FloatParam", "IntParam", "CategoricalParam", "Objective", "SamplerConfig", "PrunerConfig"]
