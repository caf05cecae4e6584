"""Hand-designed sequence baselines as single-architecture spaces: ``seq_cnn`` (a
1-D CNN) and ``seq_bigru`` (a bidirectional GRU).

Each space holds exactly one architecture, fixed by its config, and has no supernet:
select it with the ``fixed`` strategy, which trains the space's :meth:`baseline`
with the same trainer, budget and metrics as a searched network::

    space: {type: seq_cnn, C: 32, N: 2}
    strategy: {type: fixed}

The task supplies the same stem and head as for ``seq1d``, so a baseline and a
searched cell differ only in the body.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from dnas_core import ComponentConfig, Genotype, GraphEncoding, IncompatibleError, Network
from dnas_core.space import FixedArchitectureSpace


class _FixedArchitectureSpace(FixedArchitectureSpace):
    """A space of one hand-designed architecture (no supernet)."""

    modalities = frozenset({"sequence"})
    #: Node types of the chain graph encoding (input, layers..., output).
    NODE_TYPES: tuple[str, ...] = ()

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def body(self, spec: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def layer_types(self, spec: dict[str, Any]) -> list[str]:
        """The chain of layer types for the graph encoding."""
        raise NotImplementedError

    def architecture(self) -> Genotype:
        spec = self.spec()
        text = self.name + "(" + ",".join(f"{k}={v}" for k, v in spec.items()) + ")"
        return Genotype(self.name, spec, text=text)

    def build_network(self, genotype: Genotype, task: Any) -> Network:
        self.check_genotype(genotype)
        spec = dict(genotype.spec)
        body = self.body(spec)
        return Network(task.make_stem(spec["C"]), body, task.make_head(body.out_channels))

    def encode(self, genotype: Genotype) -> GraphEncoding:
        self.check_genotype(genotype)
        chain = ["input", *self.layer_types(dict(genotype.spec)), "output"]
        n = len(chain)
        adj = np.eye(n, k=1, dtype=np.float32)
        ops = np.zeros((n, len(self.NODE_TYPES)), dtype=np.float32)
        ops[np.arange(n), [self.NODE_TYPES.index(t) for t in chain]] = 1
        return GraphEncoding(adj, ops, self.NODE_TYPES)

class CNNConfig(ComponentConfig):
    C: int = Field(32, ge=2, description="width of the first stage")
    N: int = Field(2, ge=1, description="convolution blocks per stage")
    stages: int = Field(2, ge=1, le=4, description="stages; each after the first halves L (stride 2) and doubles the width")
    kernel: int = Field(5, ge=1, le=15, description="convolution taps (odd)")


class ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1):
        super().__init__(nn.Conv1d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm1d(c_out), nn.ReLU())


class CNNBody(nn.Sequential):
    def __init__(self, C: int, N: int, stages: int, kernel: int):
        layers: list[nn.Module] = []
        c = C
        for stage in range(stages):
            if stage:
                layers.append(ConvBlock(c, 2 * c, kernel, stride=2))
                c *= 2
            layers += [ConvBlock(c, c, kernel) for _ in range(N)]
        super().__init__(*layers)
        self.out_channels = c


class SeqCNNSpace(_FixedArchitectureSpace):
    """Baseline: a plain 1-D CNN (conv-BN-ReLU blocks, stride-2 convs between stages),
    the sequence counterpart of the small image CNN (cf. the MNIST-1D paper's CNN)."""

    name = "seq_cnn"
    description = "baseline: plain 1-D CNN for sequences (train with strategy fixed)"
    Config = CNNConfig
    NODE_TYPES = ("input", "conv", "conv_stride2", "output")

    def spec(self) -> dict[str, Any]:
        c = self.config
        if c.kernel % 2 == 0:
            raise IncompatibleError(f"seq_cnn: kernel={c.kernel} must be odd to keep the sequence length")
        return {"model": "cnn", "C": c.C, "N": c.N, "stages": c.stages, "kernel": c.kernel}

    def body(self, spec: dict[str, Any]) -> nn.Module:
        return CNNBody(spec["C"], spec["N"], spec["stages"], spec["kernel"])

    def layer_types(self, spec: dict[str, Any]) -> list[str]:
        out: list[str] = []
        for stage in range(spec["stages"]):
            out += (["conv_stride2"] if stage else []) + ["conv"] * spec["N"]
        return out


class BiGRUConfig(ComponentConfig):
    C: int = Field(32, ge=2, description="channels the stem hands to the GRU (its input size)")
    hidden: int = Field(48, ge=2, description="hidden units per direction")
    layers: int = Field(1, ge=1, le=4, description="stacked GRU layers")


class BiGRUBody(nn.Module):
    """(N, C, L) -> bidirectional GRU over L -> (N, 2*hidden, L)."""

    def __init__(self, C: int, hidden: int, layers: int):
        super().__init__()
        self.gru = nn.GRU(C, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.out_channels = 2 * hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.gru(x.transpose(1, 2))
        return y.transpose(1, 2)


class SeqBiGRUSpace(_FixedArchitectureSpace):
    """Baseline: a bidirectional GRU over the stem's sequence (cf. the MNIST-1D
    paper's GRU); the task head pools its outputs over L."""

    name = "seq_bigru"
    description = "baseline: bidirectional GRU for sequences (train with strategy fixed)"
    Config = BiGRUConfig
    NODE_TYPES = ("input", "bigru", "output")

    def spec(self) -> dict[str, Any]:
        c = self.config
        return {"model": "bigru", "C": c.C, "hidden": c.hidden, "layers": c.layers}

    def body(self, spec: dict[str, Any]) -> nn.Module:
        return BiGRUBody(spec["C"], spec["hidden"], spec["layers"])

    def layer_types(self, spec: dict[str, Any]) -> list[str]:
        return ["bigru"] * spec["layers"]
