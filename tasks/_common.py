"""Helpers shared by the built-in tasks: data paths, reproducible splits, safe unpickling."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

from dnas_core import DataError, data_root


def resolve_path(path: str | None, default_rel: str, what: str, expected: str) -> Path:
    """The manifest's path, else ``<data root>/<default_rel>``; a clear error naming the
    path and the expected format when it is missing."""
    p = Path(path).expanduser() if path else data_root() / default_rel
    if not p.exists():
        if not path:
            hint = f" (no path given in the manifest; looked under the data root {data_root()}, set DNAS_DATA_ROOT or task.path)"
        elif not p.is_absolute():
            hint = f" (a relative path is read from the current directory, {Path.cwd()})"
        else:
            hint = ""
        raise DataError(f"{what}: {p} does not exist{hint}; expected {expected}")
    return p


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with ``fraction`` of every class held out."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    if fraction <= 0:
        return idx, idx[:0]
    counts = np.bincount(labels.astype(np.int64)) if labels.size else np.array([])
    strat = labels if counts.size and counts[counts > 0].min() >= 2 else None
    keep, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=strat)
    return np.sort(keep), np.sort(held)


def subsample(indices: np.ndarray, limit: int | None, labels: np.ndarray, seed: int) -> np.ndarray:
    """At most ``limit`` indices, stratified by label, reproducible."""
    if limit is None or limit >= len(indices):
        return indices
    _, chosen = stratified_split(labels[indices], limit / len(indices), seed)
    return indices[chosen]


def check_labels(labels: Sequence[int] | np.ndarray, num_classes: int, where: str) -> None:
    arr = np.asarray(labels)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise DataError(f"{where}: labels outside 0..{num_classes - 1} (found {arr.min()}..{arr.max()})")


def classification_splits(name: str, cfg, arrays, test_fraction: float) -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_val, y_val, x_test, y_test)`` from a task's
    ``(x, y, test_x | None, test_y | None, classes)``: the official test split or a
    stratified ``test_fraction`` hold-out, then ``cfg.limit_train`` / ``cfg.limit_test``,
    then a stratified ``cfg.val_fraction`` validation split, all drawn with
    ``cfg.split_seed`` so they do not move with the run seed."""
    x, y, tx, ty, classes = arrays
    check_labels(y, len(classes), name)
    if tx is None:
        keep, held = stratified_split(y, test_fraction, cfg.split_seed)
        x, y, tx, ty = x[keep], y[keep], x[held], y[held]
    check_labels(ty, len(classes), name)
    tr = subsample(np.arange(len(y)), cfg.limit_train, y, cfg.split_seed)
    te = subsample(np.arange(len(ty)), cfg.limit_test, ty, cfg.split_seed + 1)
    x, y, tx, ty = x[tr], y[tr], tx[te], ty[te]
    try:
        train, val = stratified_split(y, cfg.val_fraction, cfg.split_seed)
    except ValueError as exc:  # too few examples to hold out every class
        raise DataError(f"{name}: cannot hold out val_fraction={cfg.val_fraction} of "
                        f"{len(y)} training examples: {exc}") from None
    return x[train], y[train], x[val], y[val], tx, ty


def tensor_task_data(x_train, y_train, x_val, y_val, x_test, y_test):
    """In-memory float inputs and integer labels as a ``TaskData`` of tensor datasets."""
    import torch
    from torch.utils.data import TensorDataset

    from dnas_core import TaskData

    def pair(x, y):
        return TensorDataset(torch.from_numpy(np.ascontiguousarray(x)).float(),
                             torch.from_numpy(np.ascontiguousarray(y)).long())

    return TaskData(train=pair(x_train, y_train), val=pair(x_val, y_val), test=pair(x_test, y_test))


class SafeUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and builtin containers only: a pickle can run arbitrary
    code when loaded, so any other global it names is a :class:`DataError` and nothing
    of it is executed. Used for the data sets distributed as pickles (MNIST-1D,
    CIFAR-10/100). ``encoding`` as in :class:`pickle.Unpickler` (``"latin1"`` reads
    Python 2 pickles, CIFAR's, with their numpy arrays)."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def __init__(self, file, source: Path, encoding: str = "ASCII"):
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            mod = __import__(module, fromlist=[name])
            return getattr(mod, name)
        raise DataError(f"{self.source}: the pickle refers to {module}.{name}, which a data file has no need of; "
                        f"refusing to load it (only numpy arrays and plain containers are allowed)")
