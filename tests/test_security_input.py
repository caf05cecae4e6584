"""Bad and hostile input: YAML tags, component names, paths, unsafe checkpoints, and
hypothesis fuzzing of the manifest loader and every data-file parser present."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnas_core import DnasError, ManifestError, RunFailed, UsageError
from dnas_core.cli import main
from dnas_core.manifest import load_manifest
from dnas_core.orchestrator import Orchestrator
from dnas_core.rundir import RunDir
from dnas_core.testing.fuzzing import default_targets, fuzz_target

from conftest import MINI_MANIFEST


def test_yaml_python_tags_are_rejected(tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINI_MANIFEST.read_text() + f'\nextends_runs: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and str(bad) in err and "Traceback" not in err
    assert not marker.exists()


def test_component_names_cannot_import_code(pm, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINI_MANIFEST.read_text().replace("type: darts", "type: os:system"))
    with pytest.raises(ManifestError, match="strategy.type"):
        load_manifest(bad, pm.registries)


@pytest.mark.parametrize("override", ["callbacks=[{type: csv, filename: ../escape.csv}]",
                                      "callbacks=[{type: csv, filename: /tmp/abs.csv}]",
                                      "callbacks=[{type: tensorboard, log_dir: ../tb}]"])
def test_manifest_paths_cannot_leave_the_run_directory(pm, override):
    with pytest.raises(ManifestError, match="callbacks.0"):
        load_manifest(MINI_MANIFEST, pm.registries, [override])


def test_run_directory_refuses_escaping_names(tmp_path):
    rd = RunDir.create(tmp_path / "run")
    for name in ("../x.json", "/etc/passwd", "plots/../../x"):
        with pytest.raises(UsageError, match="outside the run directory"):
            rd.write_text(name, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoints_are_loaded_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    rd = RunDir.create(tmp_path / "run")
    (rd.path / "checkpoints").mkdir()
    (rd.path / "checkpoints" / "search.pt").write_bytes(pickle.dumps({"net": _Exploit(marker)}))
    with pytest.raises(RunFailed, match="cannot be loaded safely"):
        rd.load_checkpoint("search")
    assert not marker.exists()


# -- fuzzing -----------------------------------------------------------------------------

KEYS = ["name", "seed", "task", "space", "strategy", "train", "backend", "export", "callbacks", "output",
        "type", "epochs", "lr", "batch_size", "digits", "nb201", "darts", "C", "N", "limit_train", "version"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["digits", "nb201", "darts", "cpu", "onnx", "csv", "1e-3"]))
values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                      st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), kids, max_size=5)),
                      max_leaves=20)
manifests = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), values, max_size=8).map(lambda d: yaml.safe_dump(d)),
    st.builds(lambda base, cut: base[:cut], st.just(MINI_MANIFEST.read_text()), st.integers(0, 600)),
    st.text(max_size=200),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(text=manifests)
def test_fuzz_manifests_end_in_clear_errors(pm, tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "m.yaml"
    path.write_text(text, encoding="utf-8")
    out = folder / "run"
    try:
        load_manifest(path, pm.registries)
    except DnasError as exc:
        assert str(path) in str(exc) or "override" in str(exc)
        with pytest.raises(DnasError):
            Orchestrator.new(path, [], out, pm)
        assert not out.exists()  # a rejected manifest never leaves a run directory


@pytest.mark.parametrize("text", ["?", "callbacks: 1289", "1: 2", "callbacks: [3]", "task: [1]", "[]", "~"])
def test_manifest_regressions_found_by_the_fuzz_benchmark(pm, tmp_path, text):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as err:
        load_manifest(path, pm.registries)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("target", default_targets(), ids=lambda t: t.name)
def test_fuzz_data_parsers_end_in_clear_errors(target):
    stats = fuzz_target(target, n=40, seed=7)
    assert stats.tried == 40
    assert stats.unclear == [], stats.unclear[:3]


def test_no_unsafe_deserialisation_in_the_sources():
    """Every torch.load is weights_only=True, every np.load allow_pickle=False, YAML is
    only safe_load'ed and no module calls pickle.load/loads directly."""
    import re

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for folder in ("dnas_core", "plugins", "tasks", "search_spaces"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for m in re.finditer(r"\btorch\.load\(([^()]|\([^()]*\))*\)", text):
                if "weights_only=True" not in m.group(0):
                    offenders.append(f"{path.relative_to(root)}: {m.group(0)[:80]}")
            for m in re.finditer(r"\bnp\.load\(([^()]|\([^()]*\))*\)", text):
                if "allow_pickle=False" not in m.group(0):
                    offenders.append(f"{path.relative_to(root)}: {m.group(0)[:80]}")
            for pat in (r"\byaml\.(load|unsafe_load|full_load)\(", r"\bpickle\.loads?\("):
                for m in re.finditer(pat, text):
                    offenders.append(f"{path.relative_to(root)}: {m.group(0)}")
    assert offenders == []
