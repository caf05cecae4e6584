"""The latency model: a per-operator lookup table measured by a backend.

For a search space, a task (which fixes the input shape) and a backend, the table
holds the measured latency of every operator the space's networks can run
(:meth:`SearchSpace.latency_ops`). The latency of a whole architecture is predicted as

    predicted_ms = scale * sum(table[key] for key in space.genotype_ops(genotype)) + const_ms

where ``scale`` and ``const_ms`` are fitted by least squares on a few measured whole
networks (they absorb what the per-operator sum misses: the framework's per-call
overhead, additions between branches, caches). Tables are cached as JSON under
``$DNAS_LATENCY_CACHE`` (default ``~/.cache/dnas/latency``), keyed by backend (and
its settings), machine, space (and its settings), task input shape and batch size.

:class:`ExpectedLatency` turns a table into a differentiable function of a
supernet's mixing weights, for latency-aware differentiable search.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backend import Backend
from .errors import IncompatibleError, UsageError
from .genotype import Genotype, canonical_json
from .progress import log
from .space import Network, SearchSpace

#: Bumped when the table format or the measuring protocol changes.
TABLE_VERSION = 5


def default_cache_dir() -> Path:
    """``$DNAS_LATENCY_CACHE`` or ``~/.cache/dnas/latency``."""
    env = os.environ.get("DNAS_LATENCY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dnas" / "latency"


def machine_id() -> dict[str, Any]:
    """What identifies the hardware a table was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "host": platform.node(),
        "cpu": cpu,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _space_input_shape(task: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in task.io_spec().input_shape)


def _example(task: Any, batch_size: int) -> torch.Tensor:
    spec = task.io_spec()
    shape = (batch_size, *spec.input_shape)
    if spec.input_dtype.is_floating_point:
        return torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=spec.input_dtype)
    return torch.zeros(shape, dtype=spec.input_dtype)


def op_group(key: str) -> str:
    """The operator type of a table key: the part before the first ``:``."""
    return key.split(":", 1)[0]


def _global_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(scale, const)`` of ``y = scale * x + const`` by least squares, ``const >= 0``
    (a network cannot cost less than its operators: no negative overhead)."""
    scale, const = 1.0, float(np.mean(y - x))
    if len(x) >= 2 and np.ptp(x) > 1e-9:
        A = np.stack([x, np.ones_like(x)], axis=1)
        (s, c), *_ = np.linalg.lstsq(A, y, rcond=None)
        if c < 0:
            s, c = float(x @ y / (x @ x)), 0.0
        if s > 0:
            scale, const = float(s), float(c)
    return scale, const


def _type_fit(X: np.ndarray, y: np.ndarray, scale: float, ridge: float) -> np.ndarray:
    """Per-type scales and the constant (last) of ``y = X @ s + const``, ridge towards
    ``scale``, all bounded at 0. Where the unconstrained optimum is feasible this is
    plain ridge least squares."""
    from scipy.optimize import lsq_linear

    lam = ridge * np.maximum((X ** 2).mean(axis=0), 1e-12)
    prior = np.concatenate([np.diag(np.sqrt(lam)), np.zeros((X.shape[1], 1))], axis=1)
    A = np.concatenate([np.concatenate([X, np.ones((len(y), 1))], axis=1), prior])
    b = np.concatenate([y, np.sqrt(lam) * scale])
    return lsq_linear(A, b, bounds=(0.0, np.inf)).x


@dataclass
class LatencyTable:
    """Measured per-operator latencies (ms) and the fitted correction.

    An operator measured alone runs with hot caches and none of the hand-over costs
    it has inside a network, and that gap differs by operator type (a 3x3 convolution
    is not slowed like an addition). So the fit gives each operator type (the key up
    to the first ``:``) its own ``scales[type]``, shrunk towards the global ``scale``
    by a ridge term so that a type the fitted networks barely vary stays near it:

        predicted_ms = sum(scales[type(k)] * ops[k] for k in keys) + const_ms
    """

    ops: dict[str, float]
    scale: float = 1.0
    const_ms: float = 0.0
    scales: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    #: The whole networks the fit used: ``[(op keys, measured ms), ...]``.
    fit_points: list[tuple[list[str], float]] = field(default_factory=list)
    #: Measured by a backend whose graph optimiser folds input-independent subgraphs
    #: and merges common subexpressions (:attr:`Backend.optimizes_graph`):
    #: predictions count only what its optimised graph still runs.
    optimized_graph: bool = False

    def _check(self, keys: list[str]) -> None:
        missing = [k for k in keys if k not in self.ops]
        if missing:
            raise KeyError(f"latency table has no entry for operator(s) {sorted(set(missing))[:5]}; "
                           "rebuild it for this space configuration")

    def op_sum(self, keys: list[str]) -> float:
        """Plain sum of the measured latencies of ``keys`` (ms)."""
        self._check(keys)
        return float(sum(self.ops[k] for k in keys))

    def cost(self, keys: list[str]) -> float:
        """Sum of the fitted costs of ``keys`` (ms), without the constant."""
        self._check(keys)
        return float(sum(self.scales.get(op_group(k), self.scale) * self.ops[k] for k in keys))

    def predict_keys(self, keys: list[str]) -> float:
        return self.cost(keys) + self.const_ms

    def predict(self, space: SearchSpace, genotype: Genotype, task: Any) -> float:
        """Predicted latency (ms) of the network of ``genotype``."""
        return self.predict_keys(space.genotype_ops(genotype, task, optimized_graph=self.optimized_graph))

    def fit(self, points: list[tuple[list[str], float]], ridge: float = 0.1) -> None:
        """Least squares on measured whole networks ``[(op keys, ms), ...]``: first the
        global ``measured = scale * op_sum + const``, then per-type scales with a ridge
        penalty ``ridge * mean(x_type^2) * (s_type - scale)^2`` towards it, bounded to
        ``s_type >= 0`` and ``const >= 0`` (an operator type measured alone may cost
        far more than in a network, e.g. ONNX Runtime's layout conversions around a
        lone pooling, but never less than nothing).

        A dozen types fitted on 16 networks can chase noise, so the per-type scales are
        kept only when they predict better out of sample: the mean relative error of
        leave-one-out predictions over the fit networks, per-type fit against the
        global one."""
        self.fit_points = [(list(k), float(m)) for k, m in points]
        self.scales = {}
        if not points:
            self.scale, self.const_ms = 1.0, 0.0
            return
        x = np.array([self.op_sum(k) for k, _ in points])
        y = np.array([m for _, m in points])
        self.scale, self.const_ms = _global_fit(x, y)
        if len(points) < 4 or ridge <= 0:
            return
        groups = sorted({op_group(k) for keys, _ in points for k in keys})
        X = np.zeros((len(points), len(groups)))
        for i, (keys, _) in enumerate(points):
            for k in keys:
                X[i, groups.index(op_group(k))] += self.ops[k]
        err_global, err_types = 0.0, 0.0
        for i in range(len(points)):
            keep = np.arange(len(points)) != i
            scale, const = _global_fit(x[keep], y[keep])
            sol = _type_fit(X[keep], y[keep], scale, ridge)
            err_global += abs(scale * x[i] + const - y[i]) / y[i]
            err_types += abs(X[i] @ sol[:-1] + sol[-1] - y[i]) / y[i]
        if err_types < err_global:
            sol = _type_fit(X, y, self.scale, ridge)
            self.scales = {g: float(v) for g, v in zip(groups, sol[:-1], strict=True)}
            self.const_ms = float(sol[-1])

    def to_json(self) -> dict[str, Any]:
        return {"version": TABLE_VERSION, "ops": self.ops, "scale": self.scale, "const_ms": self.const_ms,
                "scales": self.scales, "meta": self.meta, "fit_points": self.fit_points,
                "optimized_graph": self.optimized_graph}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyTable:
        return cls(ops={str(k): float(v) for k, v in data["ops"].items()}, scale=float(data["scale"]),
                   const_ms=float(data["const_ms"]), scales={str(k): float(v) for k, v in data.get("scales", {}).items()},
                   meta=dict(data.get("meta", {})),
                   fit_points=[(list(k), float(m)) for k, m in data.get("fit_points", [])],
                   optimized_graph=bool(data.get("optimized_graph", False)))


@dataclass(frozen=True)
class MeasureSettings:
    batch_size: int = 1
    warmup: int = 5
    repeats: int = 30
    #: Whole networks measured to fit ``scale`` and ``const_ms``.
    fit_networks: int = 16
    seed: int = 0
    #: Every module is measured in this many interleaved rounds (round-robin over all
    #: modules), each giving the median of ``repeats`` calls.
    rounds: int = 3
    #: How the rounds combine: ``min`` keeps the least-disturbed round (robust on a
    #: machine shared with other processes), ``median`` their median.
    combine: str = "min"
    #: Ridge strength of the per-operator-type scales (0: one global scale only).
    ridge: float = 0.3


def table_identity(space: SearchSpace, task: Any, backend: Backend, settings: MeasureSettings) -> dict[str, Any]:
    """Everything a cached table depends on."""
    return {
        "version": TABLE_VERSION,
        "backend": backend.name,
        "backend_config": backend.config.model_dump(mode="json"),
        "machine": machine_id(),
        "space": space.name,
        "space_config": space.config.model_dump(mode="json"),
        "task": task.name,
        "input_shape": list(_space_input_shape(task)),
        "num_outputs": int(task.io_spec().num_outputs),
        "settings": asdict(settings),
    }


def cache_path(identity: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    digest = hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:16]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / f"{identity['space']}-{identity['backend']}-{digest}.json"


def measure_modules(modules: list[tuple[torch.nn.Module, torch.Tensor]], backend: Backend,
                    settings: MeasureSettings = MeasureSettings()) -> list[float]:
    """Latency (ms) of each ``(module, example)``: the median of ``settings.repeats``
    calls, in ``settings.rounds`` interleaved rounds combined by ``settings.combine``."""
    if settings.combine not in ("min", "median"):
        raise UsageError(f"latency settings: combine must be 'min' or 'median', not {settings.combine!r}")
    per_round: list[list[float]] = [[] for _ in modules]
    for _ in range(max(1, settings.rounds)):
        for i, (module, x) in enumerate(modules):
            lat = backend.measure_latency(module.eval(), x, warmup=settings.warmup, repeats=settings.repeats)
            per_round[i].append(lat.median_ms)
    reduce = np.min if settings.combine == "min" else np.median
    return [float(reduce(r)) for r in per_round]


def network_module(space: SearchSpace, genotype: Genotype, task: Any, settings: MeasureSettings = MeasureSettings()):
    """``(network, example input)`` of ``genotype`` for :func:`measure_modules`."""
    torch.manual_seed(settings.seed)
    return space.build_network(genotype, task).eval(), _example(task, settings.batch_size)


def measure_network(space: SearchSpace, genotype: Genotype, task: Any, backend: Backend,
                    settings: MeasureSettings = MeasureSettings()) -> float:
    """Measured median latency (ms) of the whole network of ``genotype``."""
    return measure_modules([network_module(space, genotype, task, settings)], backend, settings)[0]


def measure_networks(space: SearchSpace, genotypes: list[Genotype], task: Any, backend: Backend,
                     settings: MeasureSettings = MeasureSettings()) -> list[float]:
    """Measured latencies (ms) of several genotypes' networks, rounds interleaved."""
    return measure_modules([network_module(space, g, task, settings) for g in genotypes], backend, settings)


def build_latency_table(space: SearchSpace, task: Any, backend: Backend, settings: MeasureSettings = MeasureSettings(),
                        cache_dir: str | Path | None = None, refresh: bool = False, use_cache: bool = True) -> LatencyTable:
    """Measure (or load from the cache) the latency table of ``space`` for ``task`` on
    ``backend``. ``task`` must have loaded its data (its stem needs the statistics)."""
    if not space.supports_latency():
        raise IncompatibleError(f"search space {space.name!r} does not implement latency_ops / genotype_ops / "
                                "arch_op_keys, so it has no latency model")
    identity = table_identity(space, task, backend, settings)
    path = cache_path(identity, cache_dir)
    if use_cache and not refresh and path.is_file():
        try:
            data = json.loads(path.read_text())
            if data.get("meta", {}).get("identity") == json.loads(canonical_json(identity)):
                log(f"[latency] table of {space.name} on {backend.name} read from the cache {path}")
                return LatencyTable.from_json(data)
        except (OSError, ValueError, KeyError) as exc:
            log(f"warning: ignoring unreadable latency cache {path}: {exc}")

    t0 = time.perf_counter()
    log(f"[latency] measuring the table of {space.name} on {backend.name} (cached afterwards in {path})")
    latency_ops = space.latency_ops(task)
    keys = [op.key for op in latency_ops]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise UsageError(f"search space {space.name!r}: latency_ops lists the key(s) {dup[:3]} more than once")
    gen = torch.Generator().manual_seed(settings.seed)
    examples = [torch.randn(settings.batch_size, *op.input_shape, generator=gen) for op in latency_ops]
    rng = np.random.default_rng(settings.seed)
    genotypes = [space.sample(rng) for _ in range(settings.fit_networks)]
    # The cost of calling the backend at all (an identity module at each input shape):
    # a whole network pays it once, not once per operator, so it is taken off every
    # operator (ONNX Runtime's session.run costs more than a small convolution).
    shapes = sorted({tuple(op.input_shape) for op in latency_ops})
    baselines = [(torch.nn.Identity(), torch.randn(settings.batch_size, *shape, generator=gen)) for shape in shapes]
    # Operators, baselines and the fit's whole networks share the interleaved rounds,
    # so that a change of load between them cannot bias the fitted scales.
    measured = measure_modules([(op.module, x) for op, x in zip(latency_ops, examples, strict=True)] + baselines
                               + [network_module(space, g, task, settings) for g in genotypes], backend, settings)
    n_ops, n_base = len(keys), len(baselines)
    overhead = dict(zip(shapes, measured[n_ops:n_ops + n_base], strict=True))
    ops = {op.key: max(m - overhead[tuple(op.input_shape)], 0.02 * m)
           for op, m in zip(latency_ops, measured[:n_ops], strict=True)}
    table = LatencyTable(ops=ops, optimized_graph=bool(backend.optimizes_graph))
    whole = measured[n_ops + n_base:]
    table.fit([(space.genotype_ops(g, task, optimized_graph=table.optimized_graph), m)
               for g, m in zip(genotypes, whole, strict=True)], ridge=settings.ridge)
    table.meta = {"identity": json.loads(canonical_json(identity)), "seconds": round(time.perf_counter() - t0, 2),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(table.to_json(), indent=1))
            os.replace(tmp, path)
        except OSError as exc:
            log(f"warning: cannot write the latency cache {path}: {exc}")
    return table


class ExpectedLatency:
    """Differentiable expected latency (ms) of a supernet's mixing weights.

    ``weights`` passed to :meth:`__call__` is one tensor per architecture tensor of the
    supernet, of the same shape (softmax probabilities, Gumbel samples, binary gates).
    """

    def __init__(self, table: LatencyTable, space: SearchSpace, supernet: Network, task: Any):
        fixed, per_tensor = space.arch_op_keys(supernet, task)
        self.table = table
        self.fixed_ms = table.cost(fixed)
        arch = supernet.body.arch_parameters()
        if len(per_tensor) != len(arch):
            raise UsageError(f"search space {space.name!r}: arch_op_keys gives {len(per_tensor)} tensors, "
                             f"the supernet has {len(arch)} architecture tensors")
        self.costs: list[torch.Tensor] = []
        for keys, p in zip(per_tensor, arch, strict=True):
            cost = torch.tensor([[table.cost(c) for c in row] for row in keys], dtype=torch.float32)
            if cost.shape != p.shape:
                raise UsageError(f"search space {space.name!r}: arch_op_keys gives a {tuple(cost.shape)} cost "
                                 f"matrix for an architecture tensor of shape {tuple(p.shape)}")
            self.costs.append(cost.to(p.device))

    def __call__(self, weights: list[torch.Tensor]) -> torch.Tensor:
        total = sum((w.float() * c).sum() for w, c in zip(weights, self.costs, strict=True))
        return self.fixed_ms + total + self.table.const_ms

    def of_probabilities(self, supernet: Network) -> torch.Tensor:
        """Expected latency under the softmax of the architecture logits."""
        return self([torch.softmax(p, dim=-1) for p in supernet.body.arch_parameters()])

    def of_choice(self, choices: list[torch.Tensor]) -> float:
        """Predicted latency of one discrete choice (column index per row, per tensor)."""
        hard = [torch.nn.functional.one_hot(c.long().to(cost.device), cost.shape[1]).float()
                for c, cost in zip(choices, self.costs, strict=True)]
        return float(self(hard))
