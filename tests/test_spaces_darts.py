"""The DARTS search space: contract suite, fast cell == textbook mixed op, derivation,
genotype format, graph encoding and retraining at another width and depth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dnas_core import MixWeights, get_plugin_manager
from dnas_core.testing import SearchSpaceContract
from dnas_search_spaces.darts import OPS, DARTSSpace, SearchCell, reference_cell_forward
from dnas_search_spaces.darts.space import NODE_TYPES, derive_cell

# The genotype DARTS (second order) found on CIFAR-10, as printed in its genotypes.py.
DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), "
    "('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP barrier waits on a loaded 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _digits():
    task = get_plugin_manager().registries.tasks.create("digits", {"limit_train": 200, "limit_test": 60})
    task.data(0)
    return task


def _space(**cfg) -> DARTSSpace:
    return get_plugin_manager().registries.spaces.create("darts", {"C": 4, "layers": 3, **cfg})


class TestDARTSSpace(SearchSpaceContract):
    def make_space(self):
        return _space()

    def make_task(self):
        return _digits()


# -- the fast mixed op equals the textbook one ---------------------------------------------
CELLS = {"normal": (False, False), "reduction": (True, False), "after_reduction": (False, True)}


def _cell_inputs(reduction_prev: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s0 = torch.randn(3, 6, 4, 4, generator=g, dtype=torch.float64)
    s1 = torch.randn(3, 5, *((2, 2) if reduction_prev else (4, 4)), generator=g, dtype=torch.float64)
    return s0, s1


def _grads(cell, out, alpha, seed=1):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(out.shape, generator=g, dtype=out.dtype)
    params = [alpha, *cell.parameters()]
    grads = torch.autograd.grad((out * target).sum(), params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if gr is None else gr for p, gr in zip(params, grads, strict=True)]


@pytest.mark.parametrize("kind", sorted(CELLS))
@pytest.mark.parametrize("hard", [False, True], ids=["dense", "hard"])
def test_fast_cell_matches_reference_outputs_and_gradients(kind, hard):
    torch.manual_seed(0)
    reduction, reduction_prev = CELLS[kind]
    cell = SearchCell(6, 5, 4, reduction, reduction_prev).double().train()
    s0, s1 = _cell_inputs(reduction_prev)
    alpha = torch.randn(14, len(OPS), dtype=torch.float64, requires_grad=True)
    w = torch.softmax(alpha, dim=-1)
    if hard:
        # every op (none included) appears; straight-through weights as in GDAS
        index = torch.arange(14) % len(OPS)
        hard_w = torch.nn.functional.one_hot(index, len(OPS)).double()
        w = hard_w - w.detach() + w
        mix, ref_w = MixWeights(w, index), w * hard_w
    else:
        mix, ref_w = MixWeights(w), w
    fast = cell(s0, s1, mix)
    ref = reference_cell_forward(cell, s0, s1, ref_w)
    assert fast.shape == ref.shape
    assert torch.allclose(fast, ref, atol=1e-5, rtol=0), (fast - ref).abs().max()
    for a, b in zip(_grads(cell, fast, alpha), _grads(cell, ref, alpha), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()
    # the test can fail: a perturbed weight changes the output
    bad = ref_w.detach().clone()
    bad[3, 4] += 0.1
    assert not torch.allclose(fast, reference_cell_forward(cell, s0, s1, bad), atol=1e-5)


def test_fast_cell_channels_last_matches_contiguous():
    torch.manual_seed(0)
    cell = SearchCell(6, 5, 4, True, False).train()
    s0, s1 = (t.float() for t in _cell_inputs(False))
    w = torch.softmax(torch.randn(14, len(OPS)), dim=-1)
    a = cell(s0, s1, MixWeights(w))
    cl = cell.to(memory_format=torch.channels_last)
    b = cl(s0.contiguous(memory_format=torch.channels_last), s1.contiguous(memory_format=torch.channels_last), MixWeights(w))
    assert torch.allclose(a, b, atol=1e-5)


# -- derivation and genotypes --------------------------------------------------------------
def test_derive_picks_top2_inputs_by_strongest_non_none_op():
    logits = torch.zeros(14, len(OPS))
    logits[:, 0] = 9.0  # `none` dominates everywhere and must be ignored
    # node 2 (edges 0, 1): both inputs
    logits[0, OPS.index("sep_conv_3x3")] = 3
    logits[1, OPS.index("max_pool_3x3")] = 2
    # node 3 (edges 2, 3, 4 from inputs 0, 1, 2): inputs 2 and 0
    logits[4, OPS.index("dil_conv_5x5")] = 5
    logits[2, OPS.index("skip_connect")] = 4
    logits[3, OPS.index("avg_pool_3x3")] = 1
    gene = derive_cell(torch.softmax(logits, dim=-1))
    assert gene[:2] == (("sep_conv_3x3", 0), ("max_pool_3x3", 1))
    assert gene[2:4] == (("dil_conv_5x5", 2), ("skip_connect", 0))
    assert all(op != "none" for op, _ in gene)


def test_derive_from_supernet_prints_darts_form():
    space = _space()
    net = space.build_supernet(_digits())
    with torch.no_grad():
        net.body.alpha_normal.zero_()[:, OPS.index("sep_conv_3x3")] = 1
        net.body.alpha_reduce.zero_()[:, OPS.index("max_pool_3x3")] = 1
    g = space.derive(net)
    text = str(g)
    assert text.startswith("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ")
    assert "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0)" in text
    assert text.endswith("reduce_concat=[2, 3, 4, 5])")
    assert space.from_string(text) == g


def test_darts_v2_genotype_parses_and_canonicalises():
    space = _space()
    g = space.from_string(DARTS_V2)
    # the pair order inside a node is canonical (by input); the cell is the same
    assert g.spec["normal"][4:6] == (("skip_connect", 0), ("sep_conv_3x3", 1))
    assert space.from_string(DARTS_V2.replace("[2, 3, 4, 5]", "range(2, 6)")) == g
    assert space.from_string(str(g)) == g


@pytest.mark.parametrize(
    "bad, match",
    [
        (DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 5)"), "cannot take input 5"),
        (DARTS_V2.replace("'dil_conv_3x3'", "'conv_7x7'"), "bad pair"),
        (DARTS_V2.replace("('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0)", "('sep_conv_3x3', 0), ('sep_conv_3x3', 0), ('sep_conv_3x3', 0)", 1), "twice"),
        (DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[4, 5]"), "normal_concat"),
        ("|nor_conv_3x3~0|+|", "not a DARTS genotype"),
    ],
)
def test_bad_genotypes_are_rejected_with_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        _space().from_string(bad)


def test_encoding_is_a_dag_and_decode_rejects_broken_graphs():
    space = _space()
    g = space.from_string(DARTS_V2)
    graph = space.encode(g)
    assert graph.num_nodes == 30 and graph.op_names == NODE_TYPES
    assert space.decode(graph) == g
    broken = space.encode(g)
    broken.adjacency[1, 2] = 1  # a second input for the first operation node
    with pytest.raises(ValueError, match="exactly one valid input"):
        space.decode(broken)
    broken = space.encode(g)
    broken.ops[2] = 0
    broken.ops[2, NODE_TYPES.index("output")] = 1
    with pytest.raises(ValueError, match="must be an operation"):
        space.decode(broken)


def test_retrain_at_another_width_and_depth():
    space = _space(retrain_C=6, retrain_layers=5)
    task = _digits()
    g = space.from_string(DARTS_V2)
    net = space.build_network(g, task)
    assert len(net.body.cells) == 5
    assert [c.reduction for c in net.body.cells] == [False, True, False, True, False]
    assert net.body.out_channels == 4 * 4 * 6
    x = torch.randn(3, 1, 8, 8)
    out = net(x)
    assert out.shape == (3, 10)
    out.sum().backward()


def test_supernet_rejects_unknown_options():
    from dnas_core import IncompatibleError

    with pytest.raises(IncompatibleError, match="partial_channels"):
        _space().build_supernet(_digits(), partial_channels=4)


def test_supernet_hard_path_runs_only_the_chosen_ops():
    """With MixWeights.index, a convolution that is not chosen gets no gradient."""
    space = _space()
    net = space.build_supernet(_digits())
    index = torch.full((14,), OPS.index("skip_connect"))

    def hard(alpha):
        w = torch.softmax(alpha, dim=-1)
        return MixWeights(w, index)

    net.body.weight_fn = hard
    net(torch.randn(2, 1, 8, 8)).sum().backward()
    cell = net.body.cells[0]
    conv_grads = [p.grad for n, p in cell.named_parameters() if n.startswith("sources.") and ".dw" in n]
    assert all(g is None for g in conv_grads)
    assert net.body.alpha_normal.grad[:, OPS.index("skip_connect")].abs().sum() > 0
    assert np.isfinite(net.body.alpha_reduce.grad.numpy()).all()


def test_end_to_end_search_retrain_export(tmp_path):
    """dnas run on the DARTS space: search, derive (DARTS form), retrain deeper, ONNX export."""
    import yaml

    from dnas_core.orchestrator import run_manifest
    from dnas_core.testing import tiny_manifest

    manifest = tiny_manifest(
        task={"type": "digits", "limit_train": 120, "limit_test": 40},
        space={"type": "darts", "C": 4, "layers": 3, "retrain_layers": 4},
        strategy={"type": "darts", "epochs": 1, "batch_size": 32},
        train={"epochs": 1, "batch_size": 64},
        backend={"type": "cpu", "threads": 1},
    )
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest))
    run_dir, result = run_manifest(path, out=tmp_path / "run")
    text = result["genotype"]["text"]
    assert text.startswith("Genotype(normal=[(") and text.endswith("reduce_concat=[2, 3, 4, 5])")
    assert _space().from_string(text).hash() == result["genotype"]["hash"]
    assert list(run_dir.rglob("*.onnx"))
