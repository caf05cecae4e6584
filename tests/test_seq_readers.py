"""Malformed and missing text / audio / signal data give a DataError that names the
file and the expected format; a pickle cannot run code."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

import _seq_helpers as h
from dnas_core import DataError


def test_sst2_bad_header_and_bad_label(tmp_path):
    (tmp_path / "train.tsv").write_text("0\tno header here\n1\tgood\n")
    (tmp_path / "test.tsv").write_text("label\tcontent\n1\tfine\n")
    with pytest.raises(DataError, match=r"train\.tsv: line 1 .*header"):
        h.task("sst2", path=str(tmp_path)).data(0)
    (tmp_path / "train.tsv").write_text("label\tsentence\n1\tgood\npositive\tbad label\n")
    with pytest.raises(DataError, match=r"train\.tsv: line 3 .*label 0 or 1"):
        h.task("sst2", path=str(tmp_path)).data(0)


def test_sst2_missing_test_file_names_it(tmp_path):
    (tmp_path / "train.tsv").write_text("label\tsentence\n1\tgood\n")
    with pytest.raises(DataError, match=r"test\.tsv not found"):
        h.task("sst2", path=str(tmp_path)).data(0)


def test_sms_bad_line_names_file_and_line(tmp_path):
    p = tmp_path / "SMSSpamCollection"
    p.write_text("ham\thello\nspam\twin now\nmaybe spam without a tab\n")
    with pytest.raises(DataError, match=r"SMSSpamCollection: line 3 .*ham<TAB>text"):
        h.task("sms_spam", path=str(p)).data(0)


def test_text_file_errors(tmp_path):
    p = tmp_path / "one_column.csv"
    p.write_text("label,text\njustonecolumn\n")
    with pytest.raises(DataError, match=r"one_column\.csv: line 2 has 1 column"):
        h.task("text_file", path=str(p)).data(0)
    q = tmp_path / "one_class.tsv"
    q.write_text("pos\tgreat\npos\tfine\n")
    with pytest.raises(DataError, match=r"one_class\.tsv has 1 distinct label"):
        h.task("text_file", path=str(q)).data(0)


def test_missing_default_path_names_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("DNAS_DATA_ROOT", str(tmp_path))
    for name, rel in (("sst2", "text/sst2"), ("sms_spam", "text/sms-spam"), ("fsdd", "audio/fsdd"),
                      ("mnist1d", "signal/mnist1d_data.pkl")):
        with pytest.raises(DataError, match=f"{name}: .*{rel}.* does not exist.*expected"):
            h.task(name).data(0)


def test_malformed_wav_names_the_file(tmp_path):
    root = tmp_path / "fsdd"
    root.mkdir()
    for f in sorted((h.AUDIO / "fsdd" / "recordings").glob("*.wav"))[:12]:
        shutil.copy(f, root)
    (root / "3_bob_7.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(DataError, match=r"3_bob_7\.wav: not a readable WAV file"):
        h.task("fsdd", path=str(root)).data(0)
    (root / "3_bob_7.wav").unlink()
    (root / "three.wav").write_bytes((h.AUDIO / "fsdd" / "recordings" / "0_george_0.wav").read_bytes())
    with pytest.raises(DataError, match=r"three\.wav does not follow the FSDD naming"):
        h.task("fsdd", path=str(root)).data(0)


def test_wav_folder_needs_class_folders(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match=r"has 1 class folder"):
        h.task("wav_folder", path=str(tmp_path)).data(0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no \.wav files"):
        h.task("wav_folder", path=str(tmp_path)).data(0)


class _Exploit:
    """Pickles to a call of os.system: a safe loader must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"x": _Exploit(marker)}))
    with pytest.raises(DataError, match=r"evil\.pkl: the pickle refers to (posix|os|nt)\.system.*refusing"):
        h.task("mnist1d", path=str(p)).data(0)
    assert not marker.exists()


def test_malformed_mnist1d_pickles(tmp_path):
    p = tmp_path / "bad.pkl"
    p.write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match=r"bad\.pkl: not a valid pickle"):
        h.task("mnist1d", path=str(p)).data(0)
    p.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match=r"bad\.pkl: the pickle holds a list"):
        h.task("mnist1d", path=str(p)).data(0)
    p.write_bytes(pickle.dumps({"x": np.zeros((4, 40)), "y": np.zeros(4, dtype=np.int64)}))
    with pytest.raises(DataError, match=r"bad\.pkl: keys \['x_test', 'y_test'\] missing"):
        h.task("mnist1d", path=str(p)).data(0)
    p.write_bytes(pickle.dumps({"x": np.zeros((4, 40)), "y": np.zeros(5, dtype=np.int64),
                                "x_test": np.zeros((2, 40)), "y_test": np.zeros(2, dtype=np.int64)}))
    with pytest.raises(DataError, match=r"bad\.pkl: x / y are not arrays"):
        h.task("mnist1d", path=str(p)).data(0)


def test_wav_folder_labels_from_file_names(tmp_path):
    t = h.task("wav_folder", path=str(h.AUDIO / "fsdd" / "recordings"), label_regex=r"^(\d)_", duration=0.5)
    d = t.data(0)
    assert t.io_spec().extra["classes"] == [str(i) for i in range(10)]
    assert sum(d.sizes().values()) == 60
    with pytest.raises(DataError, match=r"does not match label_regex"):
        h.task("wav_folder", path=str(h.AUDIO / "fsdd" / "recordings"), label_regex=r"^(x)_").data(0)
