"""Manifest loading: safe YAML, strict validation with clear paths, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dnas_core import ManifestError, UsageError
from dnas_core.manifest import apply_overrides, dump_manifest, load_manifest, resolve_defaults, validate_manifest

QUICK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml"


def _write(tmp_path, data) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def test_quickstart_validates_and_round_trips(pm, tmp_path):
    m = resolve_defaults(load_manifest(QUICK, pm.registries), pm.registries)
    assert m.task.type == "digits" and m.strategy.epochs == 12
    again = load_manifest(_write(tmp_path, dump_manifest(m)), pm.registries)
    assert again.model_dump() == m.model_dump()


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"strategy": {"type": "darts", "epochs": "many"}}, r"strategy\.epochs: Input should be a valid integer"),
        ({"strategy": {"type": "darts", "epohcs": 3}}, r"strategy\.epohcs: unknown field"),
        ({"strategy": {"type": "dartz"}}, r"strategy\.type: unknown strategy 'dartz'; did you mean 'darts'"),
        ({"task": {"limit_train": 10}}, r"task\.type: missing"),
        ({"trian": {"epochs": 1}}, r"trian: unknown top-level field; did you mean 'train'"),
        ({"zzz": 1}, r"zzz: unknown top-level field; the fields are version, name, seed, train"),
        ({"train": {"epochs": -1}}, r"train\.epochs: Input should be greater than or equal to 0"),
        ({"space": {"type": "nb201", "C": 0}}, r"space\.C: Input should be greater than or equal to 1"),
    ],
)
def test_errors_name_the_field(pm, tmp_path, patch, message):
    data = yaml.safe_load(QUICK.read_text())
    for k, v in patch.items():
        if k == "task":
            data["task"] = v
        else:
            data[k] = v
    with pytest.raises(ManifestError, match=message) as err:
        load_manifest(_write(tmp_path, data), pm.registries)
    assert str(err.value).startswith(str(tmp_path / "m.yaml"))


def test_yaml_is_loaded_safely(pm, tmp_path):
    p = _write(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_manifest(p, pm.registries)


def test_not_a_mapping_and_missing_file(pm, tmp_path):
    with pytest.raises(ManifestError, match="mapping"):
        load_manifest(_write(tmp_path, "- a\n- b\n"), pm.registries)
    with pytest.raises(UsageError, match="not found"):
        load_manifest(tmp_path / "nope.yaml", pm.registries)


def test_overrides_parse_values_and_nested_keys():
    out = apply_overrides({"strategy": {"type": "darts"}, "seed": 0}, ["strategy.epochs=3", "seed=7", "train.lr=1e-3", "name=x"])
    assert out["strategy"]["epochs"] == 3 and out["seed"] == 7 and out["train"]["lr"] == 1e-3 and out["name"] == "x"
    with pytest.raises(UsageError, match="key.path=value"):
        apply_overrides({}, ["strategy.epochs"])


def test_overrides_reach_validation(pm):
    m = load_manifest(QUICK, pm.registries, ["strategy.epochs=2", "seed=5"])
    assert m.strategy.epochs == 2 and m.seed == 5


def test_defaults_pick_available_backend_and_exporter(pm):
    data = yaml.safe_load(QUICK.read_text())
    data.pop("backend")
    data.pop("export")
    m = resolve_defaults(validate_manifest(data, pm.registries), pm.registries)
    import torch

    assert m.backend.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert m.export.type == "onnx"


def test_schema_covers_installed_components(pm):
    from dnas_core.manifest import manifest_model

    schema = manifest_model(pm.registries).model_json_schema()
    text = str(schema)
    for name in ("digits", "nb201", "darts", "onnx", "cpu"):
        assert f"'{name}'" in text


def test_quoted_override_stays_a_string():
    out = apply_overrides({}, ["name='0'", "seed=0", 'task.path="1e3"'])
    assert out["name"] == "0" and out["seed"] == 0 and out["task"]["path"] == "1e3"
