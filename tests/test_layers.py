"""dnas_core.layers: the channel split that supernets use for batched edge convolutions."""

from __future__ import annotations

import pytest
import torch

from dnas_core.layers import split_channels


@pytest.mark.parametrize("sizes", [3, [2, 7]])
def test_split_channels_matches_split_and_keeps_the_memory_format(sizes) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 9, 5, 4).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    ref = x.detach().clone().requires_grad_(True)
    parts, ref_parts = split_channels(x, sizes), ref.split(sizes, dim=1)
    assert [p.shape for p in parts] == [p.shape for p in ref_parts]
    weights = [torch.randn(p.shape) for p in parts]
    # the last part is left unused: its gradient is zero, as with plain slicing
    sum((w * p).sum() for w, p in zip(weights[:-1], parts[:-1], strict=True)).backward()
    sum((w * p).sum() for w, p in zip(weights[:-1], ref_parts[:-1], strict=True)).backward()
    torch.testing.assert_close(x.grad, ref.grad)
    assert x.grad.is_contiguous(memory_format=torch.channels_last)


def test_split_channels_on_sequences_is_plain_split() -> None:
    x = torch.randn(2, 6, 10, requires_grad=True)
    a, b = split_channels(x, 3)
    (a.sum() + 2 * b.sum()).backward()
    assert torch.equal(x.grad[:, :3], torch.ones(2, 3, 10)) and torch.equal(x.grad[:, 3:], 2 * torch.ones(2, 3, 10))
