"""The chain-structured mobile space: the search-space contract and its own rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dnas_core import IncompatibleError, MixWeights, get_plugin_manager
from dnas_core.testing import SearchSpaceContract

TINY = {"stem_channels": 8, "last_channels": 16, "kernels": [3, 5], "expansions": [1, 3],
        "stages": [{"channels": 8, "layers": 2, "stride": 1}, {"channels": 12, "layers": 2, "stride": 2}]}


def _space(**cfg):
    return get_plugin_manager().registries.spaces.create("mobile", {**TINY, **cfg})


def _digits():
    return get_plugin_manager().registries.tasks.create("digits", {"limit_train": 100, "limit_test": 30})


class TestMobileSpace(SearchSpaceContract):
    def make_space(self):
        return _space()

    def make_task(self):
        return _digits()


def test_default_space_has_the_fbnet_choices():
    space = get_plugin_manager().registries.spaces.create("mobile", {})
    layers = space.layers()
    assert len(layers[0].choices) == 10  # 9 MBConv + skip (16 -> 16, stride 1)
    assert {"k3_e1", "k5_e3", "k7_e6", "skip"} <= set(layers[0].choices)
    # Skip only where the layer keeps its shape.
    for ly in layers:
        assert ly.can_skip == (ly.stride == 1 and ly.c_in == ly.c_out)


def test_invalid_genotypes_are_rejected():
    space = _space()
    with pytest.raises(ValueError, match="layer 2"):
        space.genotype(["skip", "skip", "skip", "skip"])  # layer 2 changes width and stride
    with pytest.raises(ValueError, match="4 layer choices"):
        space.genotype(["skip"])
    g = space.genotype(["skip", "k3_e3", "k5_e1", "skip"])
    assert space.from_string(str(g)) == g
    graph = space.encode(g)
    graph.ops[3] = 0
    graph.ops[3, space.node_types.index("skip")] = 1
    with pytest.raises(ValueError):
        space.decode(graph)


def test_bad_config_and_options_name_the_problem():
    with pytest.raises(Exception, match="odd"):
        _space(kernels=[3, 4])
    with pytest.raises(IncompatibleError, match="partial_channels"):
        _space().build_supernet(_digits(), partial_channels=4)


def test_hard_and_active_path_modes_compute_only_their_paths():
    """index mode and active-mask mode give the output of the chosen candidates only."""
    torch.manual_seed(0)
    task = _digits()
    task.data(0)
    space = _space()
    net = space.build_supernet(task, active_paths=True).eval()
    body = net.body
    x = torch.randn(2, 1, 8, 8)
    g = space.genotype(["k5_e3", "skip", "k3_e1", "k5_e1"])
    idx = [torch.zeros(a.shape[0], dtype=torch.long) for a in body.arch_parameters()]
    for ly, (t, r), c in zip(space.layers(), body.layer_rows(), g.spec, strict=True):
        idx[t][r] = ly.choices.index(c)
    mixes = {id(a): MixWeights(torch.nn.functional.one_hot(i, a.shape[1]).float(), i)
             for a, i in zip(body.arch_parameters(), idx, strict=True)}
    body.weight_fn = lambda a: mixes[id(a)]
    hard = net(x)
    body.weight_fn = lambda a: MixWeights(mixes[id(a)].weights, active=mixes[id(a)].weights > 0)
    masked = net(x)
    # The same network built stand-alone with the supernet's candidate weights.
    single = space.build_network(g, task).eval()
    single.stem.load_state_dict(net.stem.state_dict())
    single.head.load_state_dict(net.head.state_dict())
    single.body.last.load_state_dict(body.last.state_dict())
    for layer, mixed, ly, c in zip(single.body.layers, body.mixed, space.layers(), g.spec, strict=True):
        layer.load_state_dict(mixed.ops[ly.choices.index(c)].state_dict())
    ref = single(x)
    assert torch.allclose(hard, ref, atol=1e-5) and torch.allclose(masked, ref, atol=1e-5)


def test_space_size_of_the_default_configuration():
    space = get_plugin_manager().registries.spaces.create("mobile", {})
    sizes = [len(ly.choices) for ly in space.layers()]
    assert int(np.prod(sizes)) == 9 ** 3 * 10 ** 4  # 3 layers change shape, 4 may skip
