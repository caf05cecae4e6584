"""Building blocks of the chain-structured mobile space (FBNet / ProxylessNAS).

Every searchable layer chooses one block: an inverted-residual MBConv (1x1 expansion
by ``e``, ``k x k`` depthwise convolution, 1x1 projection, residual where the shape is
kept) or ``skip`` (identity; only where stride is 1 and the width does not change).
"""

from __future__ import annotations

import torch
from torch import nn

from dnas_core import MixWeights


def choice_name(kernel: int, expansion: int) -> str:
    return f"k{kernel}_e{expansion}"


def parse_choice(name: str) -> tuple[int, int]:
    """``"k5_e3"`` -> (5, 3); ``ValueError`` otherwise."""
    try:
        k, e = name.split("_")
        if k[0] != "k" or e[0] != "e":
            raise ValueError
        return int(k[1:]), int(e[1:])
    except (ValueError, IndexError):
        raise ValueError(f"not an MBConv choice name (like 'k3_e6'): {name!r}") from None


class MBConv(nn.Module):
    """Inverted residual block (MobileNetV2): expand, depthwise, project."""

    def __init__(self, c_in: int, c_out: int, kernel: int, expansion: int, stride: int):
        super().__init__()
        mid = c_in * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(mid, mid, kernel, stride=stride, padding=kernel // 2, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU6(inplace=True),
            nn.Conv2d(mid, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


def make_block(choice: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    if choice == "skip":
        if stride != 1 or c_in != c_out:
            raise ValueError(f"skip is not allowed where the shape changes ({c_in}->{c_out}, stride {stride})")
        return nn.Identity()
    k, e = parse_choice(choice)
    return MBConv(c_in, c_out, k, e, stride)


class MixedLayer(nn.Module):
    """All candidate blocks of one layer, mixed by one row of weights."""

    def __init__(self, choices: tuple[str, ...], c_in: int, c_out: int, stride: int):
        super().__init__()
        self.choices = choices
        self.ops = nn.ModuleList(make_block(c, c_in, c_out, stride) for c in choices)

    def forward(self, x: torch.Tensor, w: torch.Tensor, index: torch.Tensor | None, active: torch.Tensor | None) -> torch.Tensor:
        if index is not None:
            i = int(index)
            return w[i] * self.ops[i](x)
        if active is not None:
            picks = [i for i in range(len(self.ops)) if bool(active[i])]
        else:
            picks = [i for i in range(len(self.ops)) if bool(w[i] != 0)]
        out = None
        for i in picks:
            y = w[i] * self.ops[i](x)
            out = y if out is None else out + y
        return out if out is not None else torch.zeros_like(self.ops[0](x))  # pragma: no cover - weights sum to 1


def row(mix: MixWeights, r: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    return (mix.weights[r], None if mix.index is None else mix.index[r],
            None if mix.active is None else mix.active[r])
