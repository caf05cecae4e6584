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


def test_corrupt_checkpoint_error_does_not_advise_unsafe_loading(tmp_path):
    rd = RunDir.create(tmp_path / "run")
    (rd.path / "checkpoints").mkdir()
    (rd.path / "checkpoints" / "retrain.pt").write_text("not a checkpoint")
    with pytest.raises(RunFailed, match="retrain stage") as info:
        rd.load_checkpoint("retrain")
    msg = str(info.value)
    assert "False" not in msg and "\n" not in msg  # torch's "set weights_only to False" advice is dropped


def test_npz_that_is_not_a_zip_gets_a_plain_error(tmp_path):
    from dnas_tasks.medical.tasks import read_medmnist

    from dnas_core import DataError

    bad = tmp_path / "pneumoniamnist.npz"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a zip archive") as info:
        read_medmnist(bad, "pneumoniamnist")
    assert "allow_pickle" not in str(info.value) and str(bad) in str(info.value)


def test_resume_refuses_a_folder_that_dnas_did_not_create(tmp_path, capsys):
    """A user's folder that happens to hold a valid manifest.yaml is not a run: resume
    neither runs it nor deletes the user's *.tmp files."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "manifest.yaml").write_text(MINI_MANIFEST.read_text())
    keep = [proj / ".session.tmp", proj / ".notes.txt.x1y2.tmp", proj / "notes.txt"]
    for f in keep:
        f.write_text("mine")
    assert main(["run", "--resume", str(proj)]) == 2
    assert "not a dnas run directory" in capsys.readouterr().err
    assert sorted(p.name for p in proj.iterdir()) == sorted(["manifest.yaml", *(f.name for f in keep)])


def test_resume_reads_the_manifest_before_cleaning_up(tmp_path, capsys):
    run = RunDir.create(tmp_path / "run")
    (run.path / "manifest.yaml").write_text("apiVersion: v1\nkind: Pod\n")  # not a dnas manifest
    half = run.path / ".model.pt.ab12.tmp"
    half.write_text("partial")
    assert main(["run", "--resume", str(run.path)]) == 2
    assert "apiVersion" in capsys.readouterr().err
    assert half.exists()  # nothing is deleted for a run that cannot resume


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("x"), "is not a folder"),
    (lambda p: (p.mkdir(), (p / "a").write_text("x")), "not empty"),
])
def test_run_directory_must_be_new_or_empty(tmp_path, make, message):
    target = tmp_path / "out"
    make(target)
    with pytest.raises(UsageError, match=message):
        RunDir.create(target)


def test_duplicate_manifest_keys_are_an_error(pm, tmp_path):
    text = MINI_MANIFEST.read_text()
    bad = tmp_path / "dup.yaml"
    bad.write_text(text + "\nstrategy: {type: gdas, epochs: 1}\n")
    with pytest.raises(ManifestError, match="duplicate key 'strategy'"):
        load_manifest(bad, pm.registries)


def test_override_list_index_out_of_range(pm):
    with pytest.raises(UsageError, match="index 3 is out of range"):
        load_manifest(MINI_MANIFEST, pm.registries, ["callbacks=[{type: csv}]", "callbacks.3.type=csv"])


def test_export_null_means_no_export(pm, tmp_path):
    from dnas_core.manifest import resolve_defaults

    data = yaml.safe_load(MINI_MANIFEST.read_text())
    data.pop("export", None)
    missing = tmp_path / "missing.yaml"
    missing.write_text(yaml.safe_dump(data))
    assert resolve_defaults(load_manifest(missing, pm.registries), pm.registries).export is not None
    off = tmp_path / "off.yaml"
    off.write_text(yaml.safe_dump({**data, "export": None}))
    assert resolve_defaults(load_manifest(off, pm.registries), pm.registries).export is None


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
    only read by safe loaders (safe_load, or yaml.load with the manifest's SafeLoader
    subclass) and no module calls pickle.load/loads directly."""
    import re

    from dnas_core.manifest import _UniqueKeyLoader

    assert issubclass(_UniqueKeyLoader, yaml.SafeLoader)

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
            for pat in (r"\byaml\.(load|unsafe_load|full_load)\([^\n]*", r"\bpickle\.loads?\("):
                for m in re.finditer(pat, text):
                    if "Loader=_UniqueKeyLoader)" not in m.group(0):
                        offenders.append(f"{path.relative_to(root)}: {m.group(0)[:80]}")
    assert offenders == []


def test_fuzz_regression_a_mapping_as_component_type(pm, tmp_path):
    """Found by benchmarks/fuzz.py: `space: {type: {...}}` raised TypeError (unhashable)."""
    bad = tmp_path / "m.yaml"
    bad.write_text(MINI_MANIFEST.read_text().replace("space: {type: nb201, C: 2, N: 1}", "space: {type: {a: 1}}"))
    with pytest.raises(ManifestError, match=r"space.type: must be a component name, not a dict"):
        load_manifest(bad, pm.registries)


def test_yaml_merge_keys_still_load(pm, tmp_path):
    """The duplicate-key check must not break YAML anchors merged with `<<`, nor an
    override of a merged key."""
    data = yaml.safe_load(MINI_MANIFEST.read_text())
    text = yaml.safe_dump({k: v for k, v in data.items() if k != "train"})
    text += "base_train: &t {epochs: 2, batch_size: 16}\n"
    path = tmp_path / "m.yaml"
    path.write_text(text.replace("base_train: &t", "x-anchors: &t") + "train: {<<: *t, epochs: 1}\n")
    from dnas_core.manifest import read_yaml

    loaded = read_yaml(path)
    assert loaded["train"] == {"epochs": 1, "batch_size": 16}
