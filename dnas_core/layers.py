"""Tensor operations that search spaces share.

:func:`split_channels` is ``tensor.split(sizes, dim=1)`` with a backward pass that
suits supernets: a batched convolution for every edge leaving a node is split into
the edges' slices, and autograd's own slice backward is slow for that (see
:class:`_SplitChannels`).
"""

from __future__ import annotations

import torch


class _SplitChannels(torch.autograd.Function):
    """``y.split(sizes, dim=1)`` whose backward is one ``cat`` in ``y``'s memory format.

    Autograd's own slice backward zero-fills a full-size gradient for every slice and
    sums them, always in the contiguous (NCHW) format. On a channels-last ``y`` that is
    ``n`` full passes, and the NCHW gradient then sends batch norm's and pooling's
    backward down their mixed-format slow paths (3-4x slower on CPU in torch 2.13):
    the whole supernet step was twice as slow as with this split."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, sizes: int | list[int]):
        cl = y.dim() == 4 and not y.is_contiguous() and y.is_contiguous(memory_format=torch.channels_last)
        ctx.fmt = torch.channels_last if cl else torch.contiguous_format
        parts = y.split(sizes, dim=1)
        ctx.shapes = [p.shape for p in parts]
        return parts

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):
        ref = next(g for g in grads if g is not None)
        parts = [g if g is not None else ref.new_zeros(shape) for g, shape in zip(grads, ctx.shapes, strict=True)]
        return torch.cat(parts, dim=1).contiguous(memory_format=ctx.fmt), None


def split_channels(y: torch.Tensor, sizes: int | list[int]) -> tuple[torch.Tensor, ...]:
    """``y.split(sizes, dim=1)`` with a gradient in ``y``'s memory format (see
    :class:`_SplitChannels`)."""
    return _SplitChannels.apply(y, sizes)
