"""The dnas command line: subcommands, help, exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from dnas_core.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "examples" / "quickstart.yaml"


def test_console_script_help_lists_commands():
    exe = shutil.which("dnas") or str(Path(sys.executable).with_name("dnas"))
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("run", "validate", "plugins", "schema", "export"):
        assert cmd in out


@pytest.mark.parametrize("cmd", ["run", "validate", "plugins", "schema", "export"])
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([cmd, "--help"])
    assert exit_.value.code == 0
    assert "usage: dnas " + cmd in capsys.readouterr().out


def test_validate_ok_prints_resolved_manifest(capsys):
    assert main(["validate", str(QUICK), "strategy.epochs=2"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["strategy"]["epochs"] == 2 and resolved["backend"]["type"] in ("cpu", "cuda")


def test_validate_checks_the_runs_named_in_extends_runs(tmp_path, capsys):
    assert main(["validate", "-q", str(QUICK), f"extends_runs=[{tmp_path / 'never-ran'}]"]) == 2
    err = capsys.readouterr().err
    assert "extends_runs:" in err and "never-ran: not a directory or file" in err


def test_bad_manifest_exits_2_with_one_line(tmp_path, capsys):
    data = yaml.safe_load(QUICK.read_text())
    data["strategy"]["epochs"] = "lots"
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(p) in err[0] and "strategy.epochs" in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_adds_traceback(where, tmp_path, capsys):
    """--debug is a top-level option, but the error lines say "rerun with --debug":
    after the command and its arguments it works too."""
    p = tmp_path / "bad.yaml"
    p.write_text("task: {type: nope}\n")
    argv = ["--debug", "validate", str(p)] if where == "before" else ["validate", str(p), "--debug", "seed=1"]
    assert main(argv) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_bad_manifest_with_nproc_is_one_line_before_any_process_starts(tmp_path, capsys):
    data = yaml.safe_load(QUICK.read_text())
    data["strategy"]["epohcs"] = 1
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    assert main(["run", str(p), "--nproc", "2", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "strategy.epohcs" in err[0], err
    assert not (tmp_path / "run").exists()


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run"])
    assert exit_.value.code == 2
    assert main(["run", "/nonexistent/m.yaml"]) == 2
    assert "manifest file not found" in capsys.readouterr().err


def test_plugins_lists_distribution_and_version(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("nb201"))
    assert "dnas 0.1.0" in line and "space: nb201" in line


def test_schema_is_json(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "task" in schema["properties"]
    assert main(["schema", "--kind", "strategy"]) == 0
    assert "darts" in json.loads(capsys.readouterr().out)


def test_export_of_a_non_run_dir_exits_2(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    assert "not a dnas run directory" in capsys.readouterr().err


def test_overrides_after_options_are_accepted(capsys):
    assert main(["validate", str(QUICK), "--quiet", "seed=3"]) == 0
    with pytest.raises(SystemExit):
        main(["validate", str(QUICK), "--bogus"])


@pytest.mark.parametrize(("overrides", "names"), [
    (["strategy.type=proxylessnas"], "does not support the supernet options"),
    (["space={type: small_cnn}"], "without a supernet; use it with strategy: {type: fixed}"),
    (["strategy.exclude_ops=[nor_conv3x3]"], "strategy.exclude_ops: ['nor_conv3x3'] not among"),
    (["strategy.augment=both"], "strategy.augment: 'both' needs a task with training augmentation"),
    (["task.val_fraction=0"], "needs a validation split for its architecture steps"),
    (["strategy.type=gdas", "strategy.selection=perturbation"], "strategy.selection: perturbation"),
    (["strategy.type=pc_darts", "strategy.partial_channels=3"], "strategy.partial_channels=3 must divide"),
    (["space={type: darts, C: 4, layers: 2}", "strategy.type=fbnet"], "needs a search space with a latency model"),
    (["strategy={type: fixed, genotype: '|nor_conv_3x3~0|'}"], "strategy.genotype"),
    (["backend.type=cuda"], "no CUDA device is available"),
], ids=["supernet-options", "no-supernet", "exclude-ops", "augment", "no-val", "selection", "partial-channels",
        "latency-model", "fixed-genotype", "no-gpu"])
def test_validate_finds_what_the_run_would_refuse_at_its_start(overrides, names, capsys):
    """A manifest `dnas validate` calls valid must also start: the strategy builds its
    supernet against the task and space (on the loaded data) and checks its options."""
    if overrides == ["backend.type=cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["validate", "-q", str(QUICK), *overrides]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and names in err[0], err
    # --no-data checks the manifest and the components only
    if overrides[0] != "space={type: small_cnn}":
        assert main(["validate", "-q", "--no-data", str(QUICK), *overrides]) == 0


def test_a_folder_given_as_the_manifest_says_so(tmp_path, capsys):
    assert main(["validate", str(tmp_path)]) == 2
    assert "is a folder; a manifest is a YAML file" in capsys.readouterr().err


def test_an_unknown_component_names_the_disabled_plugins(monkeypatch, capsys):
    monkeypatch.setenv("DNAS_DISABLE_PLUGINS", "nb201")
    assert main(["validate", "-q", "--no-data", str(QUICK)]) == 2
    err = capsys.readouterr().err
    assert "unknown space 'nb201'" in err and "DNAS_DISABLE_PLUGINS disables the plugins nb201" in err
