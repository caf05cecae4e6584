"""Model adapters shared by the sequence tasks (text, audio, signals).

Sequence bodies take ``(N, C, L)``. A task's stem turns its raw input into that
layout (an embedding for token ids, a short convolution over feature channels for
audio frames and signals) and :class:`SequenceHead` pools over ``L`` and classifies.
"""

from __future__ import annotations

import torch
from torch import nn


class SequenceHead(nn.Module):
    """Global average and max pooling over the length axis, then a linear classifier.

    Both poolings are kept: the average sees the whole sequence, the max picks the
    strongest local evidence (a spam keyword, a sentiment word).
    """

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(2 * channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1)
        return self.fc(self.dropout(pooled))


class Standardize1d(nn.Module):
    """``(x - mean) / std`` per feature channel with statistics of the training split,
    kept inside the model so that the exported file takes raw features."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.reshape(1, -1, 1).clone().float())
        self.register_buffer("std", std.reshape(1, -1, 1).clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class FeatureStem(nn.Module):
    """Standardise the feature channels, then a ``kernel``-tap convolution to
    ``channels`` channels and batch norm: ``(N, F, L)`` -> ``(N, channels, L)``."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, channels: int, kernel: int = 3):
        super().__init__()
        self.norm = Standardize1d(mean, std)
        self.conv = nn.Conv1d(mean.numel(), channels, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.norm(x)))


class TokenStem(nn.Module):
    """Token ids ``(N, L)`` -> embeddings ``(N, channels, L)``; the padding id embeds
    to zeros."""

    def __init__(self, vocab_size: int, channels: int, padding_idx: int = 0, dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, channels, padding_idx=padding_idx)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.embed(x)).transpose(1, 2)
