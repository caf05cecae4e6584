"""The eight DARTS operations and the building blocks of DARTS cells.

As in Liu et al. (2019), ``model_search.py`` / ``operations.py``: every convolution
block starts with a ReLU and ends with batch norm; ``sep_conv`` is two stacked
(depthwise, pointwise, BN) stages; ``dil_conv`` one dilated stage; a stride-2
``skip_connect`` is a :class:`FactorizedReduce`. In the supernet (``affine=False``)
the pooling operations are followed by a parameter-free batch norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: DARTS primitive order (``genotypes.PRIMITIVES``); the logit columns follow it.
OPS: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
I_NONE, I_MAX, I_AVG, I_SKIP, I_SEP3, I_SEP5, I_DIL3, I_DIL5 = range(len(OPS))
#: (kernel, dilation) of the convolution operations, by op index.
CONV_SPECS: dict[int, tuple[int, int]] = {I_SEP3: (3, 1), I_SEP5: (5, 1), I_DIL3: (3, 2), I_DIL5: (5, 2)}
CONV_OPS: tuple[int, ...] = tuple(CONV_SPECS)
#: Intermediate nodes per cell and inputs per node (in the derived cell).
STEPS = 4
#: Edges of the search cell: (node, input) with inputs 0 = c_{k-2}, 1 = c_{k-1}, 2.. = earlier nodes.
EDGES: tuple[tuple[int, int], ...] = tuple((n, i) for n in range(STEPS) for i in range(n + 2))


class ReLUConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU -> depthwise (dilated) conv -> pointwise conv -> BN."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, dilation: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, k, stride=stride, padding=padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Two DilConv stages without dilation; only the first one strides."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            DilConv(c_in, c_in, k, stride, padding, 1, affine).op,
            DilConv(c_in, c_out, k, 1, padding, 1, affine).op,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two stride-2 1x1 convolutions on offset grids."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Pool(nn.Module):
    def __init__(self, kind: str, stride: int):
        super().__init__()
        self.kind, self.stride = kind, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            return F.max_pool2d(x, 3, self.stride, 1)
        return F.avg_pool2d(x, 3, self.stride, 1, count_include_pad=False)


def make_op(op: str, c: int, stride: int, affine: bool = True) -> nn.Module:
    """One DARTS operation on ``c`` channels (``none`` is not buildable: a derived cell
    never contains it)."""
    if op == "max_pool_3x3":
        return Pool("max", stride)
    if op == "avg_pool_3x3":
        return Pool("avg", stride)
    if op == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if op in ("sep_conv_3x3", "sep_conv_5x5"):
        k = 3 if op.endswith("3x3") else 5
        return SepConv(c, c, k, stride, k // 2, affine)
    if op in ("dil_conv_3x3", "dil_conv_5x5"):
        k = 3 if op.endswith("3x3") else 5
        return DilConv(c, c, k, stride, 2 * (k // 2), 2, affine)
    raise ValueError(f"unknown DARTS operation {op!r} (expected one of {OPS[1:]})")
