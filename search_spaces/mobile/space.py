"""A chain-structured mobile search space, as in FBNet and ProxylessNAS.

The body is a chain of stages; each stage has ``layers`` searchable layers at
``channels`` channels, the first with the stage's ``stride``. Every layer picks one
block: MBConv with kernel 3/5/7 and expansion 1/3/6 (9 blocks), or ``skip`` where the
layer keeps its shape (stride 1, same width), which lets the search drop the layer.
A 1x1 convolution to ``last_channels`` closes the body; the task supplies the stem and
the head. With the default 7 layers (3 change the shape, 4 may skip) the space holds
9^3 * 10^4 = 7.29 million architectures.

The architecture parameters are two tensors: ``fixed`` (layers that cannot skip,
9 columns) and ``free`` (layers that can, 10 columns, ``skip`` last).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from dnas_core import (
    ComponentConfig,
    Genotype,
    GraphEncoding,
    IncompatibleError,
    LatencyOp,
    MixWeights,
    Network,
    SearchSpace,
    Supernet,
)

from .ops import MixedLayer, choice_name, make_block, row


class StageConfig(ComponentConfig):
    channels: int = Field(..., ge=1, description="output width of the stage's layers")
    layers: int = Field(..., ge=1, description="searchable layers in the stage")
    stride: int = Field(1, ge=1, le=2, description="stride of the stage's first layer")


def _default_stages() -> list[StageConfig]:
    return [StageConfig(channels=16, layers=1, stride=1), StageConfig(channels=24, layers=2, stride=2),
            StageConfig(channels=32, layers=2, stride=2), StageConfig(channels=64, layers=2, stride=1)]


class MobileConfig(ComponentConfig):
    stem_channels: int = Field(16, ge=1, description="width the task's stem produces")
    stages: list[StageConfig] = Field(default_factory=_default_stages, min_length=1)
    last_channels: int = Field(128, ge=0, description="width of the closing 1x1 convolution (0: none)")
    kernels: list[int] = Field([3, 5, 7], min_length=1, description="depthwise kernel sizes (odd)")
    expansions: list[int] = Field([1, 3, 6], min_length=1, description="MBConv expansion ratios")
    skip: bool = Field(True, description="offer 'skip' on layers that keep their shape")
    init_scale: float = Field(1e-3, gt=0, description="std of the initial architecture logits")

    @field_validator("kernels")
    @classmethod
    def _odd(cls, v: list[int]) -> list[int]:
        if any(k < 1 or k % 2 == 0 for k in v) or len(set(v)) != len(v):
            raise ValueError(f"kernels must be distinct odd sizes, got {v}")
        return v

    @field_validator("expansions")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(e < 1 for e in v) or len(set(v)) != len(v):
            raise ValueError(f"expansions must be distinct and >= 1, got {v}")
        return v


class Layer:
    """One searchable layer's shape and allowed choices."""

    def __init__(self, index: int, c_in: int, c_out: int, stride: int, size: tuple[int, int], choices: tuple[str, ...]):
        self.index, self.c_in, self.c_out, self.stride, self.size, self.choices = index, c_in, c_out, stride, size, choices

    @property
    def can_skip(self) -> bool:
        return "skip" in self.choices

    def key(self, choice: str) -> str | None:
        """Latency-table key of ``choice`` here (``None`` for the free identity)."""
        if choice == "skip":
            return None
        return f"{choice}:{self.c_in}>{self.c_out}:s{self.stride}:{self.size[0]}x{self.size[1]}"


class MobileBody(Supernet):
    def __init__(self, layers: list[Layer], last: nn.Module, init_scale: float):
        super().__init__()
        self.layer_info = layers
        self.mixed = nn.ModuleList(MixedLayer(ly.choices, ly.c_in, ly.c_out, ly.stride) for ly in layers)
        self.last = last
        #: (tensor index, row) of every layer; tensor 0 = fixed layers, 1 = free layers.
        self.rows: list[tuple[int, int]] = []
        counts = [0, 0]
        for ly in layers:
            t = 1 if ly.can_skip else 0
            self.rows.append((t, counts[t]))
            counts[t] += 1
        self.names = [n for n, c in zip(("fixed", "free"), counts, strict=True) if c]
        self.tensor_of = {t: i for i, t in enumerate(t for t, c in enumerate(counts) if c)}
        width = {0: None, 1: None}
        for ly in layers:
            width[1 if ly.can_skip else 0] = len(ly.choices)
        self.alphas = nn.ParameterList(
            nn.Parameter(init_scale * torch.randn(c, width[t])) for t, c in enumerate(counts) if c
        )

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas)

    def arch_labels(self):
        out = []
        for name, t in zip(self.names, sorted(self.tensor_of), strict=True):
            layers = [ly for ly, (tt, _) in zip(self.layer_info, self.rows, strict=True) if tt == t]
            out.append((name, [f"L{ly.index}" for ly in layers], list(layers[0].choices)))
        return out

    def layer_rows(self) -> list[tuple[int, int]]:
        """For each layer: (index into arch_parameters(), row)."""
        return [(self.tensor_of[t], r) for t, r in self.rows]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixes: list[MixWeights] = [self.weight_fn(a) for a in self.alphas]
        for layer, (t, r) in zip(self.mixed, self.layer_rows(), strict=True):
            x = layer(x, *row(mixes[t], r))
        return self.last(x)


class MobileNet(nn.Module):
    """The discrete body of one genotype."""

    def __init__(self, layers: list[Layer], choices: tuple[str, ...], last: nn.Module):
        super().__init__()
        self.layers = nn.Sequential(*(make_block(c, ly.c_in, ly.c_out, ly.stride) for ly, c in zip(layers, choices, strict=True)))
        self.last = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.layers(x))


class MobileSpace(SearchSpace):
    """Chain of MBConv layers (kernel x expansion) or skips, FBNet / ProxylessNAS style."""

    name = "mobile"
    description = "chain-structured mobile space: per layer MBConv k3/5/7 x e1/3/6 or skip (FBNet, ProxylessNAS)"
    Config = MobileConfig
    modalities = frozenset({"image"})

    # -- structure --------------------------------------------------------------------
    @property
    def mbconv_choices(self) -> tuple[str, ...]:
        return tuple(choice_name(k, e) for k in self.config.kernels for e in self.config.expansions)

    @property
    def node_types(self) -> tuple[str, ...]:
        return ("input", *self.mbconv_choices, "skip", "output")

    def layers(self, size: tuple[int, int] = (1, 1)) -> list[Layer]:
        cfg = self.config
        out, c_in, (h, w), i = [], cfg.stem_channels, size, 0
        for stage in cfg.stages:
            for j in range(stage.layers):
                stride = stage.stride if j == 0 else 1
                can_skip = cfg.skip and stride == 1 and c_in == stage.channels
                choices = self.mbconv_choices + (("skip",) if can_skip else ())
                out.append(Layer(i, c_in, stage.channels, stride, (h, w), choices))
                h, w = -(-h // stride), -(-w // stride)
                c_in, i = stage.channels, i + 1
        return out

    def _sizes(self, task: Any) -> tuple[int, int]:
        spec = task.io_spec()
        size = tuple(spec.body_size) or tuple(spec.input_shape[1:])
        if len(size) != 2:
            raise IncompatibleError(f"search space mobile needs 2-D images; task {task.name!r} gives body size {size}")
        return int(size[0]), int(size[1])

    def _last(self) -> tuple[nn.Module, int]:
        cfg = self.config
        c = cfg.stages[-1].channels
        if not cfg.last_channels:
            return nn.Identity(), c
        return nn.Sequential(nn.Conv2d(c, cfg.last_channels, 1, bias=False), nn.BatchNorm2d(cfg.last_channels),
                             nn.ReLU6(inplace=True)), cfg.last_channels

    # -- supernet ---------------------------------------------------------------------
    def build_supernet(self, task: Any, **options: Any) -> Network:
        unknown = set(options) - {"active_paths"}
        if unknown:
            raise IncompatibleError(f"search space mobile does not support the supernet options {sorted(unknown)}")
        last, c = self._last()
        body = MobileBody(self.layers(self._sizes(task)), last, self.config.init_scale)
        return Network(task.make_stem(self.config.stem_channels), body, task.make_head(c))

    def derive(self, supernet: Network) -> Genotype:
        body: MobileBody = supernet.body
        alphas = [a.detach() for a in body.arch_parameters()]
        choices = [ly.choices[int(alphas[t][r].argmax())] for ly, (t, r) in zip(body.layer_info, body.layer_rows(), strict=True)]
        return self.genotype(choices)

    # -- genotypes --------------------------------------------------------------------
    def genotype(self, choices: list[str] | tuple[str, ...]) -> Genotype:
        choices = tuple(choices)
        layers = self.layers()
        if len(choices) != len(layers):
            raise ValueError(f"a mobile genotype has {len(layers)} layer choices, got {len(choices)}")
        for ly, c in zip(layers, choices, strict=True):
            if c not in ly.choices:
                raise ValueError(f"layer {ly.index}: {c!r} is not one of {list(ly.choices)}")
        return Genotype(self.name, choices, text="-".join(choices))

    def from_string(self, text: str) -> Genotype:
        return self.genotype(tuple(text.strip().split("-")))

    def build_network(self, genotype: Genotype, task: Any) -> Network:
        self.check_genotype(genotype)
        last, c = self._last()
        body = MobileNet(self.layers(self._sizes(task)), tuple(genotype.spec), last)
        return Network(task.make_stem(self.config.stem_channels), body, task.make_head(c))

    def sample(self, rng: np.random.Generator) -> Genotype:
        return self.genotype(tuple(ly.choices[int(rng.integers(len(ly.choices)))] for ly in self.layers()))

    def encode(self, genotype: Genotype) -> GraphEncoding:
        self.check_genotype(genotype)
        types = self.node_types
        n = len(genotype.spec) + 2
        adj = np.eye(n, k=1, dtype=np.float32)
        ops = np.zeros((n, len(types)), dtype=np.float32)
        ops[0, 0] = ops[-1, -1] = 1
        for i, c in enumerate(genotype.spec):
            ops[i + 1, types.index(c)] = 1
        return GraphEncoding(adj, ops, types)

    def decode(self, graph: GraphEncoding) -> Genotype:
        n = len(self.layers()) + 2
        if graph.op_names != self.node_types or graph.num_nodes != n:
            raise ValueError(f"graph does not use this mobile space's encoding ({n} nodes over {self.node_types})")
        if not np.array_equal(graph.adjacency > 0.5, np.eye(n, k=1) > 0.5):
            raise ValueError("graph adjacency is not a chain")
        types = graph.ops.argmax(axis=1)
        if types[0] != 0 or types[-1] != len(self.node_types) - 1:
            raise ValueError("graph must start with the input node and end with the output node")
        return self.genotype(tuple(self.node_types[t] for t in types[1:-1]))

    # -- latency ------------------------------------------------------------------------
    def _fixed_ops(self, task: Any) -> list[LatencyOp]:
        cfg = self.config
        h, w = self._sizes(task)
        layers = self.layers((h, w))
        last, c = self._last()
        fh, fw = layers[-1].size
        fh, fw = -(-fh // layers[-1].stride), -(-fw // layers[-1].stride)
        shape = tuple(int(s) for s in task.io_spec().input_shape)
        ops = [LatencyOp(f"stem:{'x'.join(map(str, shape))}>{cfg.stem_channels}", task.make_stem(cfg.stem_channels), shape)]
        if cfg.last_channels:
            ops.append(LatencyOp(f"last:{cfg.stages[-1].channels}>{c}:{fh}x{fw}", last, (cfg.stages[-1].channels, fh, fw)))
        ops.append(LatencyOp(f"head:{c}:{fh}x{fw}", task.make_head(c), (c, fh, fw)))
        return ops

    def latency_ops(self, task: Any) -> list[LatencyOp]:
        ops = self._fixed_ops(task)
        seen = set()
        for ly in self.layers(self._sizes(task)):
            for c in ly.choices:
                key = ly.key(c)
                if key is None or key in seen:
                    continue
                seen.add(key)
                ops.append(LatencyOp(key, make_block(c, ly.c_in, ly.c_out, ly.stride), (ly.c_in, *ly.size)))
        return ops

    def genotype_ops(self, genotype: Genotype, task: Any, optimized_graph: bool = False) -> list[str]:
        # Every block reads the previous one's output (a skipped layer is an identity,
        # never a zero), so no part of the network is input-independent: folding changes nothing.
        self.check_genotype(genotype)
        keys = [op.key for op in self._fixed_ops(task)]
        for ly, c in zip(self.layers(self._sizes(task)), genotype.spec, strict=True):
            k = ly.key(c)
            if k is not None:
                keys.append(k)
        return keys

    def arch_op_keys(self, supernet: Network, task: Any):
        body: MobileBody = supernet.body
        fixed = [op.key for op in self._fixed_ops(task)]
        per_tensor: list[list[list[list[str]]]] = [[] for _ in body.arch_parameters()]
        for ly, (t, _r) in zip(self.layers(self._sizes(task)), body.layer_rows(), strict=True):
            per_tensor[t].append([[k] if (k := ly.key(c)) is not None else [] for c in ly.choices])
        return fixed, per_tensor
