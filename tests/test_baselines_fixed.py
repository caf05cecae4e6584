"""The ``fixed`` strategy: no search, a given genotype or the space's baseline."""

from __future__ import annotations

import json

import pytest
import yaml

from dnas_core import IncompatibleError, UsageError
from dnas_core.orchestrator import run_manifest
from dnas_core.testing import StrategyContract, tiny_manifest

RESNET_CELL = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"


class TestFixedStrategy(StrategyContract):
    def manifest(self):
        return tiny_manifest(strategy={"type": "fixed", "genotype": RESNET_CELL}, backend={"type": "cpu", "threads": 1})


def _run(tmp_path, name, **sections):
    m = tiny_manifest(backend={"type": "cpu", "threads": 1}, **sections)
    m["train"] = {"epochs": 0}
    m["export"] = None
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(m))
    return run_manifest(path, out=tmp_path / name)


def test_text_form_json_spec_and_file_give_the_same_genotype(tmp_path):
    _, a = _run(tmp_path, "text", strategy={"type": "fixed", "genotype": RESNET_CELL})
    assert a["genotype"]["text"] == RESNET_CELL
    spec = list(a["genotype"]["spec"])
    _, b = _run(tmp_path, "spec", strategy={"type": "fixed", "genotype": spec})
    _, c = _run(tmp_path, "file", strategy={"type": "fixed", "genotype": str(tmp_path / "text" / "genotype.json")})
    assert a["genotype"]["hash"] == b["genotype"]["hash"] == c["genotype"]["hash"]
    assert json.loads((tmp_path / "spec" / "search_summary.json").read_text())["source"] == "config"


def test_bad_genotype_names_the_field(tmp_path):
    with pytest.raises(UsageError, match="strategy.genotype"):
        _run(tmp_path, "bad", strategy={"type": "fixed", "genotype": "|conv_9x9~0|+|x|+|y|"})
    with pytest.raises(UsageError, match="strategy.genotype"):
        _run(tmp_path, "short", strategy={"type": "fixed", "genotype": ["none", "none"]})


def test_space_without_baseline_says_so(tmp_path):
    with pytest.raises(IncompatibleError, match="no hand-designed baseline"):
        _run(tmp_path, "nobase", strategy={"type": "fixed"})
