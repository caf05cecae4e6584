"""The seq1d space and the sequence baselines: contract suites on text (integer
token inputs) and signal tasks, the fast mixed op against the textbook one, unfit
task/space pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import _seq_helpers as h
from dnas_core import IncompatibleError, MixWeights
from dnas_core.testing import SearchSpaceContract


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = h.one_thread()
    yield
    torch.set_num_threads(before)


def _space(name, **cfg):
    return h.registries().spaces.create(name, cfg)


class TestSeq1DOnSignals(SearchSpaceContract):
    def make_space(self):
        return _space("seq1d", C=8)

    def make_task(self):
        return h.mnist1d()


class TestSeq1DOnText(SearchSpaceContract):
    def make_space(self):
        return _space("seq1d", C=8, N=1, stages=2, retrain_C=12)

    def make_task(self):
        return h.sms()


class _BaselineContract(SearchSpaceContract):
    """Baselines have no supernet: the supernet checks become checks of the error."""

    def test_supernet_forward_backward_reaches_arch_parameters(self, space, task):
        with pytest.raises(IncompatibleError, match="strategy: {type: fixed}"):
            space.build_supernet(task)

    def test_derive_gives_a_valid_genotype(self, space, task):
        g = space.baseline(task)
        space.check_genotype(g)
        assert space.decode(space.encode(g)) == g
        assert space.from_string(space.format(g)) == g


class TestSeqCNNBaseline(_BaselineContract):
    def make_space(self):
        return _space("seq_cnn", C=8, N=1)

    def make_task(self):
        return h.fsdd()


class TestSeqBiGRUBaseline(_BaselineContract):
    def make_space(self):
        return _space("seq_bigru", C=8, hidden=8)

    def make_task(self):
        return h.sst2()


@pytest.mark.parametrize("mode", ["dense", "pruned", "hard"])
def test_fast_search_cell_equals_the_textbook_mixed_op(mode):
    from dnas_search_spaces.seq1d.ops import OPS, SearchCell, reference_cell_forward

    torch.manual_seed(0)
    cell = SearchCell(8, heads=2).double()
    x = torch.randn(4, 8, 11, dtype=torch.float64)
    w = torch.softmax(torch.randn(6, len(OPS), dtype=torch.float64), dim=-1).requires_grad_()
    if mode == "dense":
        mix, ref_w = MixWeights(w), w
    elif mode == "pruned":  # zero weights: those ops are skipped, the result is the same
        mask = torch.ones_like(w)
        mask[:, [OPS.index("sep_conv_5"), OPS.index("self_attn")]] = 0
        mask[2, :] = 0
        mix, ref_w = MixWeights(w * mask), w * mask
    else:  # GDAS-style hard sample: one op per edge, scaled by its weight
        idx = torch.tensor([2, 9, 1, 7, 0, 5])
        mix, ref_w = MixWeights(w, idx), w * torch.nn.functional.one_hot(idx, len(OPS))
    fast = cell(x, mix)
    ref = reference_cell_forward(cell, x, ref_w)
    assert torch.allclose(fast, ref, atol=1e-10)
    g_fast, = torch.autograd.grad(fast.square().sum(), w)
    g_ref, = torch.autograd.grad(reference_cell_forward(cell, x, ref_w).square().sum(), w)
    assert torch.allclose(g_fast, g_ref, atol=1e-8)


def test_derive_reads_the_argmax_and_text_roundtrips():
    from dnas_search_spaces.seq1d import OPS, edit_distance

    space = _space("seq1d", C=8)
    task = h.mnist1d()
    task.data(0)
    net = space.build_supernet(task)
    with torch.no_grad():
        net.body.alpha.zero_()
        for e, op in enumerate(["self_attn", "sep_conv_7", "none", "dil_conv_5", "skip_connect", "max_pool_3"]):
            net.body.alpha[e, OPS.index(op)] = 1.0
    g = space.derive(net)
    assert g.spec == ("self_attn", "sep_conv_7", "none", "dil_conv_5", "skip_connect", "max_pool_3")
    assert space.from_string(space.format(g)) == g
    other = space.genotype(("self_attn", "sep_conv_3", "none", "dil_conv_5", "avg_pool_3", "max_pool_3"))
    assert edit_distance(g, other) == 2 and edit_distance(g, g) == 0
    with pytest.raises(ValueError):
        space.from_string("|sep_conv_3~0|+|conv_9~0|none~1|+|none~0|none~1|none~2|")


def test_unfit_pairs_are_rejected():
    digits = h.registries().tasks.create("digits", {"limit_train": 100, "limit_test": 30})
    with pytest.raises(IncompatibleError, match="modality is 'image'"):
        _space("seq1d").check_task(digits)
    with pytest.raises(IncompatibleError, match="modality is 'sequence'"):
        h.registries().spaces.create("nb201", {"C": 4, "N": 1}).check_task(h.mnist1d())


def test_heads_must_divide_width():
    from dnas_core import ManifestError, UsageError

    with pytest.raises((ValueError, UsageError, ManifestError)):
        _space("seq1d", C=10, heads=4)
