"""A small VGG-style CNN as a one-architecture space (the image baseline).

Three stages of widths ``C``, ``2C``, ``4C``; each stage is ``blocks`` 3x3
convolution - batch norm - ReLU layers, and stages two and three start with a
stride-2 convolution. It sits between the task's stem (normalisation, 3x3 conv to
``C``) and head (global average pooling, linear), like the NAS-Bench-201 body, so the
two are trained and compared under the same trainer. ``C`` sets the parameter budget.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field
from torch import nn

from dnas_core import ComponentConfig, Genotype, GraphEncoding, IncompatibleError, Network, SearchSpace


class SmallCNNConfig(ComponentConfig):
    C: int = Field(16, ge=1, description="width of the first stage (then 2C, 4C)")
    blocks: int = Field(2, ge=1, le=8, description="conv-BN-ReLU layers per stage")


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallCNNBody(nn.Sequential):
    def __init__(self, C: int, blocks: int):
        layers, c = [], C
        for stage in range(3):
            width = C * 2**stage
            for b in range(blocks):
                layers.append(conv_bn_relu(c, width, stride=2 if stage and b == 0 else 1))
                c = width
        super().__init__(*layers)
        self.out_channels = c


class SmallCNNSpace(SearchSpace):
    """The small CNN baseline for images: one architecture, select with strategy fixed."""

    name = "small_cnn"
    description = "hand-designed small CNN (3 stages C/2C/4C) for images: one architecture, use strategy fixed"
    Config = SmallCNNConfig
    modalities = frozenset({"image"})

    def _the(self) -> Genotype:
        c = self.config
        return Genotype(self.name, {"C": c.C, "blocks": c.blocks}, text=f"small_cnn(C={c.C}, blocks={c.blocks})")

    def baseline(self, task: Any) -> Genotype:
        return self._the()

    def sample(self, rng: np.random.Generator) -> Genotype:
        return self._the()

    def from_string(self, text: str) -> Genotype:
        if text.strip() != self._the().text:
            raise ValueError(f"the small_cnn space has one architecture, {self._the().text!r}; got {text!r}")
        return self._the()

    def check_genotype(self, genotype: Genotype) -> None:
        super().check_genotype(genotype)
        if genotype != self._the():
            raise IncompatibleError(f"genotype {genotype.spec} is not this small_cnn space's architecture {self._the().spec}")

    def build_supernet(self, task: Any, **options: Any) -> Network:
        raise IncompatibleError("space small_cnn is a fixed architecture with nothing to search; use strategy: {type: fixed}")

    def derive(self, supernet: Network) -> Genotype:
        return self._the()

    def build_network(self, genotype: Genotype, task: Any) -> Network:
        self.check_genotype(genotype)
        body = SmallCNNBody(self.config.C, self.config.blocks)
        return Network(task.make_stem(self.config.C), body, task.make_head(body.out_channels))

    def encode(self, genotype: Genotype) -> GraphEncoding:
        """A chain: input -> one conv node per layer -> output."""
        self.check_genotype(genotype)
        n = 2 + 3 * self.config.blocks
        adj = np.eye(n, k=1, dtype=np.float32)
        types = ("input", "conv3x3", "output")
        ops = np.zeros((n, 3), dtype=np.float32)
        ops[0, 0] = ops[-1, 2] = 1
        ops[1:-1, 1] = 1
        return GraphEncoding(adj, ops, types)

    def decode(self, graph: GraphEncoding) -> Genotype:
        expected = self.encode(self._the())
        if (graph.op_names != expected.op_names or graph.num_nodes != expected.num_nodes
                or not np.array_equal(graph.adjacency > 0.5, expected.adjacency > 0.5)
                or not np.array_equal(graph.ops.argmax(1), expected.ops.argmax(1))):
            raise ValueError("graph is not this small_cnn architecture")
        return self._the()
