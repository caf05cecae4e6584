"""Task embeddings for task-conditioned generation (MetaD2A spirit) and the
conditioned generator trained across the tasks of a run store.

:func:`task_features` is a fixed statistics embedding of a task: from its descriptor
(number of outputs, input shape, training-set size) and, when a data sample is at
hand, from the sample itself (input mean and spread, label entropy). Every feature is
log-scaled or bounded so that tasks of very different sizes stay comparable.

:func:`train_task_conditioned` fits a conditional :class:`GraphVAE` on the best
architectures of every run in a store, each paired with its task's embedding;
:func:`propose` then draws architectures for a new task from its embedding alone,
before any query.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dnas_core import Genotype, SearchSpace
from dnas_core.runstore import RunStore

FEATURES = ("log_outputs", "channels", "log_spatial", "log_train_size", "input_mean", "input_std", "label_entropy")


def task_features(task: Any = None, descriptor: dict[str, Any] | None = None, data: Any = None,
                  max_samples: int = 512) -> np.ndarray:
    """The statistics embedding (``len(FEATURES)`` floats) of a task.

    Give ``task`` (its descriptor and, with ``data``, a sample of its training split)
    or a bare ``descriptor`` (``num_outputs``, ``input_shape``, optional
    ``train_size``, ``input_mean``, ``input_std``, ``label_entropy``)."""
    d = dict(descriptor or {})
    if task is not None:
        d = {**task.descriptor(), **d}
    shape = list(d.get("input_shape") or [1])
    spatial = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
    stats = {"train_size": d.get("train_size"), "input_mean": d.get("input_mean"),
             "input_std": d.get("input_std"), "label_entropy": d.get("label_entropy")}
    if data is not None:
        stats.update(_sample_stats(data.train, max_samples, int(d.get("num_outputs", 2))))
    k = max(int(d.get("num_outputs", 2)), 2)
    return np.array([
        math.log(k),
        float(shape[0]) if len(shape) > 1 else 1.0,
        math.log(max(spatial, 1)),
        math.log(max(float(stats["train_size"] or 1), 1.0)),
        float(stats["input_mean"] or 0.0),
        float(stats["input_std"] or 0.0),
        float(stats["label_entropy"] if stats["label_entropy"] is not None else 1.0),
    ], dtype=np.float32)


def _sample_stats(split: Any, n: int, k: int) -> dict[str, float]:
    from dnas_core.training import iterate_batches

    x, y = next(iterate_batches(split, min(n, len(split))))
    x = x[0] if isinstance(x, (tuple, list)) else x
    x = x.float()
    counts = np.bincount(y.numpy().astype(np.int64).ravel(), minlength=k) if y.dtype.is_floating_point is False else None
    ent = 1.0
    if counts is not None and counts.sum():
        p = counts / counts.sum()
        p = p[p > 0]
        ent = float(-(p * np.log(p)).sum() / math.log(max(k, 2)))
    return {"train_size": len(split), "input_mean": float(x.mean()), "input_std": float(x.std()), "label_entropy": ent}


def training_set(store: RunStore, space: SearchSpace, top_fraction: float = 0.1, min_per_task: int = 10
                 ) -> tuple[list[Any], np.ndarray]:
    """(graphs, conditions): the best ``top_fraction`` (at least ``min_per_task``) of every
    record of ``space`` that has task features, each with its task's embedding."""
    graphs, conds = [], []
    for r in store.for_space(space.name):
        feats = r.task_features if r.task_features is not None else task_features(descriptor=r.task).tolist()
        ranked = r.ranked()
        n = max(min_per_task, int(round(top_fraction * len(ranked))))
        for g, _ in ranked[:n]:
            graphs.append(space.encode(g))
            conds.append(feats)
    if not graphs:
        raise ValueError(f"the run store has no evaluated genotypes of space {space.name!r} to learn from")
    return graphs, np.asarray(conds, dtype=np.float32)


def train_task_conditioned(store: RunStore, space: SearchSpace, top_fraction: float = 0.1, base: Any = None,
                           **vae_config: Any):
    """A conditional GraphVAE fitted on the store's top architectures per task.
    ``base`` (an unconditional graph_vae state) is not required; the conditioned model
    is small and trains in seconds."""
    from .vae import GraphVAE

    graphs, conds = training_set(store, space, top_fraction)
    vae = GraphVAE(condition_dim=conds.shape[1], **vae_config)
    stats = vae.fit(graphs, conditions=conds)
    return vae, stats


def propose(vae: Any, space: SearchSpace, features: np.ndarray, n: int, rng: np.random.Generator,
            max_draws: int = 12) -> list[Genotype]:
    """The first ``n`` distinct valid genotypes the conditioned VAE draws for a task.
    Draws start from the prior N(0, I) and widen it step by step when a model trained
    on few architectures keeps decoding the same ones."""
    out: dict[str, Genotype] = {}
    for k in range(max_draws):
        z = (1.25 ** k) * rng.standard_normal((n, vae.config.latent_dim))
        for graph in vae.decode(z, features):
            try:
                g = space.decode(graph)
            except ValueError:
                continue
            out.setdefault(g.hash(), g)
            if len(out) == n:
                return list(out.values())
    return list(out.values())
