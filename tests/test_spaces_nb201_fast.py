"""The fast NAS-Bench-201 search cell (batched per-source convolutions, mixing weight
folded into batch norm, pooling once per target) equals the textbook weighted sum in
float64: outputs and the gradients of every weight and of the logits, on the dense
path and on the hard (``MixWeights.index``) path, in NCHW and channels-last."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dnas_core import MixWeights
from dnas_search_spaces.nb201.ops import OPS, SearchCell, reference_cell_forward


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP barrier waits on a loaded 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _grads(cell, out, alpha):
    target = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    params = [alpha, *cell.parameters()]
    grads = torch.autograd.grad((out * target).sum(), params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("hard", [False, True], ids=["dense", "hard"])
def test_fast_cell_matches_reference(hard, channels_last):
    torch.manual_seed(0)
    cell = SearchCell(4).double().train()
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    if channels_last:
        cell = cell.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    alpha = torch.randn(6, len(OPS), dtype=torch.float64, requires_grad=True)
    w = torch.softmax(alpha, dim=-1)
    if hard:
        index = torch.tensor([0, 1, 2, 3, 4, 3])  # every op, `none` included
        one_hot = F.one_hot(index, len(OPS)).double()
        w = one_hot - w.detach() + w  # straight-through, as GDAS
        mix, ref_w = MixWeights(w, index), w * one_hot
    else:
        mix, ref_w = MixWeights(w), w
    fast = cell(x, mix)
    ref = reference_cell_forward(cell, x, ref_w)
    assert torch.allclose(fast, ref, atol=1e-5, rtol=0), (fast - ref).abs().max()
    for a, b in zip(_grads(cell, fast, alpha), _grads(cell, ref, alpha), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()
    if hard:  # a precomputed host index (what NB201Body passes) gives the same result
        assert torch.equal(cell(x, mix, index.tolist()), fast)
    bad = ref_w.detach().clone()
    bad[3, 2] += 0.1  # an edge from the input node: changes the output on both paths
    assert not torch.allclose(fast, reference_cell_forward(cell, x, bad), atol=1e-5)


def test_dead_nodes_are_skipped_without_changing_the_output():
    """Edges into a node that never reaches the output are not built; the cell computes
    the same function as one that builds and runs them."""
    import torch

    from dnas_search_spaces.nb201.ops import InferCell, effective_ops, live_nodes

    ops = ("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect", "none", "none")
    # node 2 feeds nothing (edge 3<-2 is none); node 1 feeds only node 2.
    assert live_nodes(ops) == {3}
    assert effective_ops(ops) == ("none", "none", "none", "skip_connect", "none", "none")
    torch.manual_seed(0)
    cell = InferCell(ops, 4).eval()
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(cell(x), x)  # only the skip from the input reaches the output
    assert len(cell.edges) == 1


def test_input_nodes_are_those_the_output_can_depend_on():
    """Nodes outside ``input_nodes`` are constants of the parameters: a cell whose
    output node is one of them gives the same output for any input (what lets ONNX
    Runtime fold it, and the latency model count nothing for it)."""
    import torch

    from dnas_search_spaces.nb201.ops import InferCell, input_nodes

    # node 1 has no input; node 2 = conv(x) + conv(node 1); node 3 = conv(node 1) + skip(node 2)
    ops = ("none", "nor_conv_1x1", "nor_conv_3x3", "none", "nor_conv_1x1", "skip_connect")
    assert input_nodes(ops) == {0, 2, 3}
    const = ("none", "nor_conv_1x1", "nor_conv_1x1", "none", "nor_conv_1x1", "none")
    assert input_nodes(const) == {0, 2}  # node 2 depends on the input, but node 3 reads only node 1
    torch.manual_seed(0)
    for text, depends in ((ops, True), (const, False)):
        cell = InferCell(text, 4)
        for m in cell.modules():  # non-trivial batch-norm statistics: a conv of zero is a non-zero constant
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.bias.data.uniform_(-1, 1)
        cell.eval()
        a, b = cell(torch.randn(1, 4, 5, 5)), cell(torch.randn(1, 4, 5, 5))
        assert torch.equal(a, b) is not depends
        assert a.abs().sum() > 0


def test_fused_batch_norm_recalibrates_per_channel():
    """``momentum = None`` after ``reset_running_stats()`` (the weight-sharing
    evaluator's recalibration): the running statistics of the channels a path uses are
    the average of its batches' statistics; channels off the path stay reset."""
    from dnas_search_spaces.nb201.ops import _SourceConvs

    torch.manual_seed(0)
    src = _SourceConvs(4, 3, track=True).train()
    src.bn1_mean.fill_(5.0)  # stale statistics from supernet training
    src.reset_running_stats()
    src.momentum = None
    sl = slice(4, 8)  # the second out-edge's channels
    ys = [torch.randn(8, 4, 5, 5) * (k + 1) + k for k in range(3)]
    for y in ys:
        src.bn(y, "bn1", torch.ones(4), sl)
    assert torch.allclose(src.bn1_mean[sl], torch.stack([y.mean((0, 2, 3)) for y in ys]).mean(0), atol=1e-6)
    assert torch.allclose(src.bn1_var[sl], torch.stack([y.var((0, 2, 3)) for y in ys]).mean(0), atol=1e-5)
    assert torch.equal(src.bn1_mean[:4], torch.zeros(4)) and torch.equal(src.bn1_var[8:], torch.ones(4))
    assert "bn1_count" not in src.state_dict()  # checkpoints keep their keys
