"""The run store: what a finished run learnt, kept so that later runs can start from it.

Every run that finishes leaves in its directory

* ``runstore.json``: the task descriptor (and the task's statistics features, when a
  plugin computed them), the search space, the strategy, every genotype evaluated
  during search with its score, and the final architecture with its test metrics;
* ``runstore.pt``: tensors worth reusing (generator weights, supernet weights and
  architecture logits), saved with ``torch.save`` as nested dicts of tensors and
  plain values, so ``torch.load(..., weights_only=True)`` reads them.

Strategies add to the record while they search (:func:`save_search`,
:func:`save_tensors`; both write to the run directory at once, so a resumed run keeps
them); the ``runstore`` plugin completes it at ``dnas_run_end``. A manifest lists
earlier run directories under ``extends_runs:``; :meth:`RunStore.from_run` loads them
for warm starts (:meth:`RunStore.top_genotypes`, :meth:`RunStore.tensors`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from .errors import UsageError
from .genotype import Genotype

RECORD_FILE = "runstore.json"
SEARCH_FILE = "runstore_search.json"
TENSORS_FILE = "runstore.pt"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------
# Writing (during and at the end of a run)
# ---------------------------------------------------------------------------------


def save_search(run: Any, evaluations: list[dict[str, Any]], metric: str, direction: str,
                task: dict[str, Any] | None = None) -> None:
    """Record the genotypes a search evaluated: ``evaluations`` is a list of
    ``{"genotype": Genotype.to_json(), "score": float}`` in query order; ``task`` the
    descriptor of the task the scores belong to (default: the run's task)."""
    run.run_dir.write_json(SEARCH_FILE, {
        "metric": metric,
        "direction": direction,
        "task": task if task is not None else run.task.descriptor(),
        "evaluations": [{"genotype": e["genotype"], "score": float(e["score"])} for e in evaluations],
    })


def _cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {str(k): _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def save_tensors(run: Any, key: str, state: dict[str, Any]) -> None:
    """Keep ``state`` (tensors and plain values) under ``key`` in ``runstore.pt``
    (``generator/graph_vae``, ``supernet/nb201``, ...)."""
    path = run.run_dir.file(TENSORS_FILE)
    data = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else {}
    data[key] = _cpu(state)
    buf = io.BytesIO()
    torch.save(data, buf)
    run.run_dir.write_bytes(TENSORS_FILE, buf.getvalue())  # a no-op on data-parallel followers


def write_record(run: Any, result: dict[str, Any], task_features: list[float] | None = None) -> Path:
    """Write ``runstore.json`` for a completed run (called by the runstore plugin)."""
    rd = run.run_dir
    search = rd.read_json(SEARCH_FILE) if rd.exists(SEARCH_FILE) else {}
    final = result.get("genotype")
    test = result.get("test_metrics") or {}
    evaluations = list(search.get("evaluations", []))
    metric = search.get("metric") or f"test_{run.task.primary_metric}"
    direction = search.get("direction") or run.task.metric_direction
    if not evaluations and final is not None and run.task.primary_metric in test:
        # A differentiable run evaluates one genotype: its own, on the test split.
        evaluations = [{"genotype": final, "score": float(test[run.task.primary_metric])}]
    record = {
        "format": FORMAT_VERSION,
        "name": run.manifest.name,
        "task": search.get("task") or run.task.descriptor(),
        "task_features": task_features,
        "space": run.space.name,
        "space_config": _plain(run.space.config.model_dump()),
        "strategy": run.strategy.name,
        "metric": metric,
        "direction": direction,
        "evaluations": evaluations,
        "final": final,
        "final_metrics": test,
        "tensors": rd.exists(TENSORS_FILE),
    }
    return rd.write_json(RECORD_FILE, record)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """One finished run, as read from its ``runstore.json``."""

    path: Path
    name: str
    task: dict[str, Any]
    space: str
    strategy: str
    metric: str
    direction: str
    evaluations: list[tuple[Genotype, float]]
    final: Genotype | None
    final_metrics: dict[str, Any] = field(default_factory=dict)
    space_config: dict[str, Any] = field(default_factory=dict)
    task_features: list[float] | None = None
    has_tensors: bool = False

    @classmethod
    def load(cls, path: str | Path) -> RunRecord:
        import json

        p = Path(path)
        f = p / RECORD_FILE if p.is_dir() else p
        if not f.is_file():
            what = "not a directory or file" if not p.exists() else f"no {RECORD_FILE} in it (did the run complete?)"
            raise UsageError(f"extends_runs: {p}: {what}")
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            evals = [(Genotype.from_json(e["genotype"]), float(e["score"])) for e in data["evaluations"]]
            final = Genotype.from_json(data["final"]) if data.get("final") else None
            return cls(path=f.parent, name=str(data.get("name", "")), task=dict(data["task"]),
                       space=str(data["space"]), strategy=str(data.get("strategy", "")),
                       metric=str(data.get("metric", "score")), direction=str(data.get("direction", "maximize")),
                       evaluations=evals, final=final, final_metrics=dict(data.get("final_metrics") or {}),
                       space_config=dict(data.get("space_config") or {}),
                       task_features=data.get("task_features"), has_tensors=bool(data.get("tensors")))
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{f}: not a valid run-store record ({type(exc).__name__}: {exc})") from None

    def ranked(self) -> list[tuple[Genotype, float]]:
        """Evaluations best first (one entry per genotype)."""
        best: dict[str, tuple[Genotype, float]] = {}
        for g, s in self.evaluations:
            h = g.hash()
            if h not in best or (s > best[h][1] if self.direction == "maximize" else s < best[h][1]):
                best[h] = (g, s)
        return sorted(best.values(), key=lambda gs: gs[1], reverse=self.direction == "maximize")

    def quantiles(self) -> list[tuple[Genotype, float]]:
        """Evaluations with their quantile within this run (1.0 best, 0.0 worst), so
        runs on different tasks and metrics can be compared."""
        ranked = self.ranked()
        n = len(ranked)
        return [(g, 1.0 - i / max(n - 1, 1)) for i, (g, _) in enumerate(ranked)]

    def tensors(self) -> dict[str, Any]:
        p = self.path / TENSORS_FILE
        if not p.is_file():
            return {}
        return torch.load(p, map_location="cpu", weights_only=True)


class RunStore:
    """The earlier runs a new run learns from."""

    def __init__(self, records: Iterable[RunRecord] = ()):
        self.records = list(records)

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> RunStore:
        return cls(RunRecord.load(p) for p in paths)

    @classmethod
    def from_run(cls, run: Any) -> RunStore:
        """The records named by the manifest's ``extends_runs``."""
        return cls.load(getattr(run.manifest, "extends_runs", []) or [])

    def __len__(self) -> int:
        return len(self.records)

    def for_space(self, space: str) -> list[RunRecord]:
        return [r for r in self.records if r.space == space]

    def top_genotypes(self, space: str, k: int) -> list[Genotype]:
        """The ``k`` best genotypes of ``space`` over all records, ranked by their
        quantile within their own run (so scores of different tasks mix fairly); a
        genotype good in several runs ranks by its mean quantile."""
        scores: dict[str, list[float]] = {}
        genos: dict[str, Genotype] = {}
        for r in self.for_space(space):
            for g, q in r.quantiles():
                scores.setdefault(g.hash(), []).append(q)
                genos[g.hash()] = g
        # Ties broken by hash so the order is reproducible.
        order = sorted(scores, key=lambda h: (-float(np.mean(scores[h])), h))
        return [genos[h] for h in order[:k]]

    def tensors(self, key: str) -> dict[str, Any] | None:
        """The most recent record's tensors saved under ``key`` (``None`` if no run has
        them)."""
        for r in reversed(self.records):
            if r.has_tensors:
                data = r.tensors()
                if key in data:
                    return data[key]
        return None


def warm_start_supernet(run: Any, net: torch.nn.Module) -> list[str]:
    """Load the supernet body (its weights and architecture logits) from the
    ``extends_runs`` records of the same space wherever names and shapes match; returns
    the loaded names. The stem and head belong to the task (input normalisation,
    classes) and are never taken. Differentiable strategies call it before their first
    epoch."""
    net = getattr(net, "module", net)  # unwrap a data-parallel wrapper
    store = RunStore.from_run(run)
    state = store.tensors(f"supernet/{run.space.name}") if len(store) else None
    if not state:
        return []
    own = net.state_dict()
    take = {k: v for k, v in state.items() if k.startswith("body.") and k in own and own[k].shape == v.shape}
    own.update(take)
    net.load_state_dict(own)
    return sorted(take)


def remember_supernet(run: Any, net: torch.nn.Module) -> None:
    """Keep the searched supernet (weights and architecture logits) for later runs."""
    net = getattr(net, "module", net)
    if getattr(run, "run_dir", None) is None:
        return
    save_tensors(run, f"supernet/{run.space.name}", net.state_dict())


__all__ = ["RunRecord", "RunStore", "save_search", "save_tensors", "write_record",
           "warm_start_supernet", "remember_supernet", "RECORD_FILE", "TENSORS_FILE"]
