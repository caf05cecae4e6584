"""Contract suites for the text and audio/signal tasks on the committed slices, and
what each task promises beyond the contract (official splits, metrics, run files)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dnas_core.testing import TaskContract


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = h.one_thread()
    yield
    torch.set_num_threads(before)

import _seq_helpers as h


class TestSST2Task(TaskContract):
    def make_task(self):
        return h.sst2()


class TestSMSSpamTask(TaskContract):
    def make_task(self):
        return h.sms()


class TestTextFileTask(TaskContract):
    def make_task(self):
        return h.text_file()


class TestFSDDTask(TaskContract):
    def make_task(self):
        return h.fsdd()


class TestWavFolderTask(TaskContract):
    def make_task(self):
        return h.wav_folder()


class TestMNIST1DTask(TaskContract):
    def make_task(self):
        return h.mnist1d()


def test_sst2_uses_the_test_file_and_builds_vocab_from_train_only():
    t = h.sst2()
    d = t.data(0)
    assert len(d.test) == 120 and len(d.train) + len(d.val) == 400
    spec = t.io_spec()
    assert spec.modality == "sequence" and spec.input_dtype == torch.int64 and spec.num_outputs == 2
    ids = d.train.tensors[0]
    assert ids.dtype == torch.int64 and int(ids.max()) < len(t.tokenizer) and int(ids.min()) >= 0
    # Words that occur only in the test file are unknown (id 1), never in the vocabulary.
    test_texts = h.TEXT.joinpath("sst2/test.tsv").read_text(encoding="utf-8").splitlines()[1:]
    train_words = set()
    for line in h.TEXT.joinpath("sst2/train.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        train_words.update(t.tokenizer.split(line.split("\t", 1)[1]))
    assert set(t.tokenizer.vocab[2:]) <= train_words
    assert t.tokenizer.coverage([line.split("\t", 1)[1] for line in test_texts]) < 1.0


def test_text_metrics_are_accuracy_and_macro_f1():
    from sklearn.metrics import f1_score

    t = h.sms()
    t.data(0)
    out = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([0, 1, 1, 0])
    m = t.compute_metrics(out, y)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx(f1_score([0, 1, 1, 0], [0, 1, 0, 0], average="macro"))


def test_sms_split_is_stratified_and_reproducible():
    a, b = h.sms().data(0), h.sms().data(0)
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    spam_share = float(a.test.tensors[1].float().mean())
    assert 0.2 < spam_share < 0.3  # 100 of 400 messages are spam


def test_text_file_maps_string_labels_to_sorted_classes():
    t = h.text_file()
    t.data(0)
    assert t.io_spec().extra["classes"] == ["negative", "positive"]


def test_fsdd_official_split_by_index():
    t = h.fsdd(val_fraction=0.25)
    d = t.data(0)
    assert len(d.test) == 20 and len(d.train) + len(d.val) == 40
    spec = t.io_spec()
    assert spec.input_shape == (32, 51)  # 32 mel bands, 0.8 s at 8 kHz with hop 128
    assert spec.extra["features"]["sample_rate"] == 8000


def test_mnist1d_shapes_and_reference_numbers():
    t = h.mnist1d()
    d = t.data(0)
    assert t.io_spec().input_shape == (1, 40) and len(d.test) == 150
    assert t.REFERENCE["cnn"] == 0.94 and t.REFERENCE["gru"] == 0.91


def test_log_mel_puts_a_pure_tone_in_the_right_band():
    from dnas_tasks.audio.features import hz_to_mel, log_mel, mel_filterbank

    rate, n_fft, n_mels = 8000, 256, 32
    fb = mel_filterbank(rate, n_fft, n_mels)
    assert fb.shape == (n_mels, n_fft // 2 + 1) and torch.all(fb >= 0)
    for freq in (300.0, 1000.0, 3000.0):
        t = torch.arange(4000) / rate
        wave = torch.sin(2 * torch.pi * freq * t)[None]
        mel = log_mel(wave, rate, n_fft, 128, n_mels)
        band = int(mel[0].mean(dim=1).argmax())
        edges = np.linspace(0, hz_to_mel(rate / 2), n_mels + 2)
        centre = edges[band + 1]
        step = edges[1] - edges[0]
        assert abs(float(hz_to_mel(freq)) - centre) <= step, (freq, band)


def test_tokenizer_roundtrip(tmp_path):
    from dnas_tasks.text import Tokenizer

    tok = Tokenizer.build(["Call 08712300220 now!", "call me now", "see you"], max_len=5, min_freq=1)
    ids = tok.encode(["call now zzz", "call 123456 now , see you later"])
    assert ids.shape == (2, 5) and ids[0, 3] == 0 and ids[0, 2] == 1  # padding and unknown
    assert tok.vocab[ids[1, 1]] == "<num>"
    tok.save(tmp_path / "tok.json")
    again = Tokenizer.load(tmp_path / "tok.json")
    assert np.array_equal(again.encode(["call now zzz"]), ids[:1])


def test_stem_errors_before_data_is_loaded():
    with pytest.raises(RuntimeError, match="load_data"):
        h.sst2(fresh=True).make_stem(8)
