"""The ``fixed`` strategy: no search, a given genotype or the space's baseline."""

from __future__ import annotations

import json

import pytest

from dnas_core import Genotype, IncompatibleError, UsageError, get_plugin_manager
from dnas_core.testing import StrategyContract, tiny_manifest

RESNET_CELL = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"


class TestFixedStrategy(StrategyContract):
    def manifest(self):
        return tiny_manifest(task={"type": "breast_cancer", "limit_train": 100},
                             space={"type": "tabular_mlp", "widths": [8, 16], "max_depth": 2, "stem_width": 8},
                             strategy={"type": "fixed", "genotype": "16-relu-none-residual|8-gelu-layernorm-none"},
                             backend={"type": "cpu", "threads": 1})


def _resolve(genotype=None, space="nb201", task="digits"):
    reg = get_plugin_manager().registries
    strategy = reg.strategies.create("fixed", {"genotype": genotype})
    t = reg.tasks.create(task, {"limit_train": 50, "limit_test": 20}) if task == "digits" else reg.tasks.create(task, {})
    return strategy.resolve(reg.spaces.create(space, {}), t)


def test_text_form_json_spec_and_file_give_the_same_genotype(tmp_path):
    a, source = _resolve(RESNET_CELL)
    assert source == "config" and a.text == RESNET_CELL
    b, _ = _resolve(list(a.spec))
    c, _ = _resolve(a.to_json())
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps(a.to_json()))
    d, _ = _resolve(str(path))
    assert a == b == c == d and b.text == RESNET_CELL  # the JSON spec gets the canonical text form


def test_bad_genotype_names_the_field(tmp_path):
    with pytest.raises(UsageError, match="strategy.genotype"):
        _resolve("|conv_9x9~0|+|x|+|y|")
    with pytest.raises(UsageError, match="strategy.genotype"):
        _resolve(["none", "none"])
    with pytest.raises(UsageError, match="belongs to space 'tabular_mlp'"):
        _resolve(Genotype("tabular_mlp", {"blocks": [[64, "relu", "none", "none"]]}).to_json())
    bad = tmp_path / "genotype.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        _resolve(str(bad))


def test_baseline_or_a_clear_error():
    with pytest.raises(IncompatibleError, match="no hand-designed baseline"):
        _resolve(None)
    g, source = _resolve(None, space="tabular_mlp", task="breast_cancer")
    assert source == "baseline" and g.space == "tabular_mlp"
