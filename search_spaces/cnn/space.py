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

from dnas_core import ComponentConfig, Genotype, GraphEncoding, Network
from dnas_core.space import FixedArchitectureSpace


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


class SmallCNNSpace(FixedArchitectureSpace):
    """The small CNN baseline for images: one architecture, select with strategy fixed."""

    name = "small_cnn"
    description = "hand-designed small CNN (3 stages C/2C/4C) for images: one architecture, use strategy fixed"
    Config = SmallCNNConfig
    modalities = frozenset({"image"})

    def architecture(self) -> Genotype:
        c = self.config
        return Genotype(self.name, {"C": c.C, "blocks": c.blocks}, text=f"small_cnn(C={c.C}, blocks={c.blocks})")

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
