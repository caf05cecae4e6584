"""Discrete architectures (genotypes) and their graph encoding.

A :class:`Genotype` is space-agnostic: the name of the space that made it and a
JSON-able ``spec`` whose meaning only that space knows. Its :meth:`Genotype.hash` is
stable across processes and machines (SHA-256 of the canonical JSON), so it serves
for de-duplication, caching evaluations and comparing runs.

A :class:`GraphEncoding` is what every space can turn a genotype into: a DAG given
by an adjacency matrix and a one-hot operation matrix. Architecture generators (VAE,
GAN) work on this encoding only, so they apply to any space.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True)
class Genotype:
    """A discrete architecture of one search space.

    ``spec`` must be JSON-serialisable; ``text`` is the space's human-readable form
    (e.g. the NAS-Bench-201 arch string) and is not part of the identity.
    """

    space: str
    spec: Any
    text: str = field(default="", compare=False)

    def hash(self) -> str:
        payload = canonical_json({"space": self.space, "spec": self.spec})
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def __str__(self) -> str:
        return self.text or canonical_json(self.spec)

    def to_json(self) -> dict[str, Any]:
        return {"space": self.space, "spec": json.loads(canonical_json(self.spec)), "text": self.text, "hash": self.hash()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Genotype:
        from .errors import UsageError

        if not isinstance(data, dict) or "space" not in data or "spec" not in data:
            raise UsageError("a genotype JSON needs the keys 'space' and 'spec'")
        g = cls(space=str(data["space"]), spec=_freeze(data["spec"]), text=str(data.get("text", "")))
        if "hash" in data and data["hash"] != g.hash():
            raise UsageError(f"genotype hash mismatch: file says {data['hash']}, content hashes to {g.hash()}")
        return g


def _freeze(obj: Any) -> Any:
    """JSON lists become tuples so that a loaded genotype equals the original."""
    if isinstance(obj, list):
        return tuple(_freeze(x) for x in obj)
    if isinstance(obj, dict):
        return {k: _freeze(v) for k, v in obj.items()}
    return obj


@dataclass
class GraphEncoding:
    """A genotype as a DAG: ``adjacency[i, j] = 1`` for an edge i -> j (upper
    triangular, nodes in topological order) and ``ops[i]`` the one-hot operation of
    node i over ``op_names``."""

    adjacency: np.ndarray
    ops: np.ndarray
    op_names: tuple[str, ...]

    def __post_init__(self) -> None:
        self.adjacency = np.asarray(self.adjacency, dtype=np.float32)
        self.ops = np.asarray(self.ops, dtype=np.float32)
        n = self.adjacency.shape[0]
        if self.adjacency.shape != (n, n) or self.ops.shape != (n, len(self.op_names)):
            raise ValueError(
                f"graph encoding shapes disagree: adjacency {self.adjacency.shape}, "
                f"ops {self.ops.shape}, {len(self.op_names)} op names"
            )

    @property
    def num_nodes(self) -> int:
        return self.adjacency.shape[0]

    def key(self) -> str:
        payload = canonical_json({"a": self.adjacency.astype(int).tolist(), "o": self.ops.argmax(1).tolist()})
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
