"""One end-to-end run per domain (text, audio) on the committed slices, plus a
baseline trained by the fixed strategy: search -> retrain -> evaluate -> ONNX export,
with the tokenizer / feature settings saved beside the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

import _seq_helpers as h

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = h.one_thread()
    yield
    torch.set_num_threads(before)


def _run(tmp_path, manifest):
    from dnas_core.orchestrator import run_manifest

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return run_manifest(path, out=tmp_path / "run")


def _manifest(task, space=None, strategy=None, **extra):
    return {
        "name": "seq-e2e", "seed": 0, "task": task,
        "space": space or {"type": "seq1d", "C": 8},
        "strategy": strategy or {"type": "darts", "epochs": 2, "batch_size": 32, "arch_lr": 3e-3},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05},
        "backend": {"type": "cpu", "threads": 1},
        "export": {"type": "onnx"},
        "output": {"onnx_check_samples": 16},
        **extra,
    }


def test_text_end_to_end_saves_the_tokenizer_with_the_model(tmp_path):
    from dnas_tasks.text import Tokenizer

    m = _manifest({"type": "sms_spam", "path": str(h.TEXT / "sms-spam" / "SMSSpamCollection"), "max_len": 32})
    m["strategy"]["epochs"] = 1
    run_dir, result = _run(tmp_path, m)
    assert result["genotype"]["space"] == "seq1d"
    assert set(result["test_metrics"]) >= {"accuracy", "macro_f1"}
    assert result["export"]["ok"], result["export"]
    # The saved tokenizer reproduces the model's inputs: ONNX on tokenizer output = torch.
    tok = Tokenizer.load(run_dir / "tokenizer.json")
    meta = json.loads((run_dir / "tokenizer.json").read_text())
    assert meta["classes"] == ["ham", "spam"]
    import onnxruntime as ort

    ids = tok.encode(["WINNER!! Call 09061701461 to claim your prize", "ok see you at home"])
    sess = ort.InferenceSession(str(run_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: ids})[0]
    assert out.shape == (2, 2) and np.isfinite(out).all()


def test_audio_end_to_end_saves_the_feature_settings(tmp_path):
    m = _manifest({"type": "fsdd", "path": str(h.AUDIO / "fsdd"), "val_fraction": 0.25})
    run_dir, result = _run(tmp_path, m)
    assert result["export"]["ok"], result["export"]
    feats = json.loads((run_dir / "features.json").read_text())
    assert feats["sample_rate"] == 8000 and feats["n_mels"] == 32 and feats["input_shape"] == [32, 51]
    assert 0.0 <= result["test_metrics"]["accuracy"] <= 1.0


def test_baseline_trained_by_the_fixed_strategy(tmp_path):
    reg = h.registries()
    if "fixed" not in reg.strategies:
        pytest.skip("the fixed strategy plugin is not installed")
    m = _manifest({"type": "mnist1d", "path": str(h.AUDIO / "mnist1d_slice.pkl")},
                  space={"type": "seq_cnn", "C": 8, "N": 1}, strategy={"type": "fixed"})
    m["train"]["epochs"] = 8
    run_dir, result = _run(tmp_path, m)
    assert result["genotype"]["spec"]["model"] == "cnn"
    assert result["export"]["ok"]
    # 10 classes: well above chance after a few epochs on 320 signals.
    assert result["test_metrics"]["accuracy"] > 0.2
