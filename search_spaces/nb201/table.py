"""Look up NAS-Bench-201 cells in the benchmark's table of test accuracies.

The table is the CSV exported from the official NATS-Bench API (topology space, 200
epochs), one row per cell in NAS-Bench-201 index order::

    CIFAR10TestAccuracy200Epochs,CIFAR100TestAccuracy200Epochs,ImageNetTestAccuracy200Epochs,ArchitectureString,UniqueString
    85.86,52.91,26.63,|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|...|,...

Usage::

    from dnas_search_spaces.nb201.table import load_table

    table = load_table()                       # $DNAS_NB201_TABLE or <data root>/nas/...
    acc = table.lookup(genotype)               # a Genotype, an arch string or 6 op names
    acc.cifar10, acc.cifar100, acc.imagenet16  # percent
    table.percentile(acc.cifar10)              # share of cells at least this good, in %

Where the file is: an explicit ``path``, else the ``DNAS_NB201_TABLE`` environment
variable, else ``nas/nas-bench-201-test-accuracy.csv`` under ``$DNAS_DATA_ROOT`` (the
data root the tasks read), else under ``../shared/data`` relative to the working
directory or the source checkout (the project's data root; see
``../shared/data/README.md``).
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from dnas_core import Genotype, UsageError, data_root
from dnas_core.task import DEFAULT_DATA_ROOT

from .ops import EDGES, OPS
from .space import arch_string, parse_arch_string

TABLE_ENV = "DNAS_NB201_TABLE"
#: The table's place under a data root.
TABLE_IN_DATA_ROOT = Path("nas") / "nas-bench-201-test-accuracy.csv"
DEFAULT_RELATIVE_PATH = DEFAULT_DATA_ROOT / TABLE_IN_DATA_ROOT
#: Column of each data set in the CSV.
COLUMNS = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "imagenet16": "ImageNetTestAccuracy200Epochs",
}
ARCH_COLUMN = "ArchitectureString"
DATASETS = tuple(COLUMNS)
NUM_CELLS = len(OPS) ** len(EDGES)


@dataclass(frozen=True)
class CellAccuracy:
    """Test accuracy (percent, 200 epochs, mean over NAS-Bench-201's seeds) of one cell."""

    arch: str
    index: int
    cifar10: float
    cifar100: float
    imagenet16: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class NB201Table:
    """The 15,625 rows of the accuracy table, indexed by arch string."""

    def __init__(self, archs: list[str], acc: np.ndarray, source: str = "<memory>"):
        if acc.shape != (len(archs), len(DATASETS)):
            raise ValueError(f"accuracy array of shape {acc.shape} for {len(archs)} architectures")
        self.source = source
        self.archs = archs
        self.acc = acc
        self._index = {a: i for i, a in enumerate(archs)}
        # Sorted columns for percentiles.
        self._sorted = np.sort(acc, axis=0)

    # -- loading --------------------------------------------------------------------
    @classmethod
    def from_csv(cls, path: str | Path) -> NB201Table:
        path = Path(path)
        if not path.is_file():
            raise UsageError(
                f"NAS-Bench-201 table not found at {path}: pass its path, set ${TABLE_ENV} to the CSV, or "
                f"$DNAS_DATA_ROOT to the folder holding nas/ with the CSV "
                f"'nas-bench-201-test-accuracy.csv' (columns {', '.join(COLUMNS.values())}, {ARCH_COLUMN})"
            )
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in (*COLUMNS.values(), ARCH_COLUMN) if c not in (reader.fieldnames or [])]
            if missing:
                raise UsageError(
                    f"{path}: not a NAS-Bench-201 accuracy table, missing column(s) {missing} "
                    f"(header: {reader.fieldnames})"
                )
            archs: list[str] = []
            values: list[list[float]] = []
            for line, row in enumerate(reader, start=2):
                arch = row[ARCH_COLUMN].strip()
                try:
                    parse_arch_string(arch)
                    values.append([float(row[c]) for c in COLUMNS.values()])
                except (ValueError, TypeError) as exc:
                    raise UsageError(f"{path}, line {line}: {exc}") from None
                archs.append(arch)
        if len(set(archs)) != len(archs):
            raise UsageError(f"{path}: an architecture string occurs more than once")
        if len(archs) != NUM_CELLS:
            raise UsageError(f"{path}: {len(archs)} cells, expected all {NUM_CELLS} NAS-Bench-201 cells")
        return cls(archs, np.asarray(values, dtype=np.float64), source=str(path))

    # -- queries --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.archs)

    def lookup(self, cell: Genotype | str | Iterable[str]) -> CellAccuracy:
        """Accuracies of ``cell``: a nb201 :class:`Genotype`, an arch string or the 6
        operation names in edge order."""
        arch = to_arch_string(cell)
        i = self._index.get(arch)
        if i is None:  # cannot happen with a complete table; kept for partial custom tables
            raise KeyError(f"{arch} is not in the NAS-Bench-201 table {self.source}")
        c10, c100, im = self.acc[i]
        return CellAccuracy(arch, i, float(c10), float(c100), float(im))

    def best(self, dataset: str = "cifar10") -> CellAccuracy:
        col = _column(dataset)
        return self.lookup(self.archs[int(np.argmax(self.acc[:, col]))])

    def percentile(self, accuracy: float, dataset: str = "cifar10") -> float:
        """Share of all cells (percent) whose accuracy is at least ``accuracy``: 0.1 means
        the top 0.1 %."""
        col = self._sorted[:, _column(dataset)]
        n_better_or_equal = len(col) - int(np.searchsorted(col, accuracy, side="left"))
        return 100.0 * n_better_or_equal / len(col)


def _column(dataset: str) -> int:
    if dataset not in COLUMNS:
        raise ValueError(f"unknown NAS-Bench-201 data set {dataset!r}; choose from {DATASETS}")
    return DATASETS.index(dataset)


def to_arch_string(cell: Genotype | str | Iterable[str]) -> str:
    """The canonical arch string of a genotype, an arch string or 6 op names."""
    if isinstance(cell, Genotype):
        if cell.space != "nb201":
            raise ValueError(f"a genotype of space {cell.space!r} cannot be looked up in NAS-Bench-201")
        return arch_string(tuple(cell.spec))
    if isinstance(cell, str):
        return arch_string(parse_arch_string(cell))
    ops = tuple(cell)
    if len(ops) != len(EDGES) or any(o not in OPS for o in ops):
        raise ValueError(f"a NAS-Bench-201 cell is {len(EDGES)} ops from {OPS}, got {ops}")
    return arch_string(ops)


def default_table_path() -> Path:
    """``$DNAS_NB201_TABLE``, else ``nas/nas-bench-201-test-accuracy.csv`` under
    ``$DNAS_DATA_ROOT`` (the data root every task reads), else ``../shared/data/nas/...``
    from the working directory, else the same path next to the source checkout
    (editable installs)."""
    env = os.environ.get(TABLE_ENV)
    if env:
        return Path(env)
    candidates = list(dict.fromkeys([data_root() / TABLE_IN_DATA_ROOT, DEFAULT_RELATIVE_PATH,
                                     Path(__file__).resolve().parents[2] / DEFAULT_RELATIVE_PATH]))
    # The first that exists; else the first looked at, which the error then names.
    return next((p for p in candidates if p.is_file()), candidates[0])


@lru_cache(maxsize=4)
def _load_cached(resolved: str, mtime: float) -> NB201Table:
    return NB201Table.from_csv(resolved)


def load_table(path: str | Path | None = None) -> NB201Table:
    """Load (once per file) the table at ``path`` or :func:`default_table_path`."""
    p = Path(path) if path is not None else default_table_path()
    if not p.is_file():
        return NB201Table.from_csv(p)  # raises the error that names the path
    p = p.resolve()
    return _load_cached(str(p), p.stat().st_mtime)


__all__ = ["CellAccuracy", "NB201Table", "load_table", "default_table_path", "to_arch_string", "TABLE_ENV", "DATASETS"]
