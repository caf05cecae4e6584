"""Audio and 1-D signal classification tasks: FSDD spoken digits, a user's folder of
labelled WAV files, MNIST-1D.

Inputs are feature sequences ``(N, F, L)`` (``F`` log-mel bands by ``L`` frames for
audio, one channel of length 40 for MNIST-1D). The log-mel features are computed
once when the data are loaded (torch only, see :mod:`.features`); the stem
standardises each feature channel with training statistics (kept in the model), then
a short convolution maps the ``F`` channels to the body's ``C``. The head pools over
``L`` and classifies. Metric: accuracy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from dnas_core import ComponentConfig, DataError, IOSpec, Task, TaskData
from dnas_tasks._common import classification_splits, resolve_path, tensor_task_data
from dnas_tasks._sequence import FeatureStem, SequenceHead

from .features import fix_length, log_mel, seconds_to_samples
from .readers import MNIST1D_FORMAT, WAV_FORMAT, read_mnist1d, read_wav


class SequenceFeatureConfig(ComponentConfig):
    val_fraction: float = Field(0.2, ge=0, lt=1, description="share of the training data held out as validation")
    limit_train: Optional[int] = Field(None, ge=10, description="use at most this many training examples (stratified)")
    limit_test: Optional[int] = Field(None, ge=10, description="use at most this many test examples (stratified)")
    split_seed: int = Field(0, ge=0, description="seed of the train/val(/test) split, fixed across run seeds")
    stem_kernel: int = Field(3, ge=1, le=15, description="taps of the stem convolution over the feature channels (1 or 3 ...)")
    head_dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the classifier")


class SequenceFeatureTask(Task):
    """Base of tasks whose inputs are float feature sequences ``(F, L)``; subclasses
    implement :meth:`read`."""

    Config = SequenceFeatureConfig
    primary_metric = "accuracy"
    test_fraction: ClassVar[float] = 0.2

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, list[str]]:
        """(train x (N, F, L) float32, train y, test x or None, test y or None, class names)."""
        raise NotImplementedError

    def _arrays(self):
        if not hasattr(self, "_cache"):
            self._cache = self.read()
        return self._cache

    def load_data(self, seed: int) -> TaskData:
        splits = classification_splits(self.name, self.config, self._arrays(), self.test_fraction)
        x_train = splits[0]
        self._mean = torch.from_numpy(x_train.mean(axis=(0, 2))).float()
        self._std = torch.from_numpy(x_train.std(axis=(0, 2))).float().clamp_min(1e-3)
        return tensor_task_data(*splits)

    def io_spec(self) -> IOSpec:
        x, _, _, _, classes = self._arrays()
        f, length = x.shape[1:]
        return IOSpec("sequence", (f, length), len(classes), body_size=(length,),
                      extra={"classes": list(classes), "features": self.feature_info()})

    def make_stem(self, channels: int) -> nn.Module:
        if not hasattr(self, "_mean"):
            raise RuntimeError("load_data() must run before make_stem(): the stem standardises with training statistics")
        return FeatureStem(self._mean, self._std, channels, self.config.stem_kernel)

    def make_head(self, channels: int) -> nn.Module:
        return SequenceHead(channels, self.io_spec().num_outputs, dropout=self.config.head_dropout)

    def feature_info(self) -> dict[str, Any]:
        """How raw data become the model's input (saved with the run)."""
        return {}

    def run_files(self) -> dict[str, Any]:
        """Written into the run directory at the start of a run: what the exported
        model expects as input."""
        spec = self.io_spec()
        return {"features.json": {"task": self.name, "input_shape": list(spec.input_shape),
                                  "classes": spec.extra["classes"], **self.feature_info()}}


# ---------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------


class AudioConfig(SequenceFeatureConfig):
    duration: float = Field(0.8, gt=0, le=60, description="seconds per clip: longer clips are cut, shorter zero-padded")
    n_fft: int = Field(256, ge=16, description="STFT window and FFT size (samples)")
    hop: int = Field(128, ge=1, description="STFT hop (samples)")
    n_mels: int = Field(32, ge=2, le=256, description="mel bands")


class AudioTask(SequenceFeatureTask):
    """Base of WAV tasks: :meth:`clips` lists (file, label, is_test) and the log-mel
    features are computed here."""

    Config = AudioConfig
    sample_rate: int = 0

    def clips(self) -> tuple[list[tuple[Path, int, bool]], list[str], bool]:
        """((file, label, is_test) for every clip, class names, whether is_test is an official split)."""
        raise NotImplementedError

    def read(self):
        cfg = self.config
        clips, classes, has_test = self.clips()
        waves, rate = [], None
        for path, _, _ in clips:
            w, r = read_wav(path)
            if rate is None:
                rate = r
            elif r != rate:
                raise DataError(f"{self.name}: {path} has sample rate {r} Hz, other clips {rate} Hz; resample the "
                                f"folder to one rate (e.g. sox in.wav -r {rate} out.wav)")
            waves.append(w)
        self.sample_rate = int(rate)
        if cfg.n_fft // 2 + 1 < cfg.n_mels:
            raise DataError(f"{self.name}: n_mels={cfg.n_mels} exceeds the {cfg.n_fft // 2 + 1} STFT bins of n_fft={cfg.n_fft}")
        length = seconds_to_samples(cfg.duration, self.sample_rate)
        feats = log_mel(fix_length(waves, length), self.sample_rate, cfg.n_fft, cfg.hop, cfg.n_mels).numpy()
        y = np.array([c[1] for c in clips], dtype=np.int64)
        is_test = np.array([c[2] for c in clips], dtype=bool)
        if not has_test:
            return feats, y, None, None, classes
        return feats[~is_test], y[~is_test], feats[is_test], y[is_test], classes

    def feature_info(self) -> dict[str, Any]:
        cfg = self.config
        return {"features": "log-mel", "sample_rate": self.sample_rate, "duration_s": cfg.duration,
                "n_fft": cfg.n_fft, "hop": cfg.hop, "n_mels": cfg.n_mels, "window": "hann", "mel_scale": "htk",
                "log_offset": 1e-6, "code": "dnas_tasks.audio.features.log_mel"}


_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


class FSDDConfig(AudioConfig):
    path: Optional[str] = Field(None, description="FSDD folder (with recordings/ or the WAV files themselves); "
                                                  "default <data root>/audio/fsdd")
    test_indices: int = Field(5, ge=1, description="official split: recordings with index below this are the test set")


class FSDDTask(AudioTask):
    """Free Spoken Digit Dataset: 8 kHz WAV files ``{digit}_{speaker}_{index}.wav``;
    the official split puts index 0-4 of every speaker and digit in the test set."""

    name = "fsdd"
    default_data = "audio/fsdd"
    description = "Free Spoken Digit Dataset (WAV), log-mel features, official split, accuracy"
    Config = FSDDConfig

    def clips(self):
        expected = "a folder of WAV files named {digit}_{speaker}_{index}.wav (FSDD recordings/)"
        root = resolve_path(self.config.path, self.default_data, "fsdd", expected)
        if (root / "recordings").is_dir():
            root = root / "recordings"
        if not root.is_dir():
            raise DataError(f"fsdd: {root} is not a folder; expected {expected}")
        files = sorted(root.glob("*.wav"))
        clips = []
        for f in files:
            m = _FSDD_NAME.match(f.name)
            if m is None:
                raise DataError(f"fsdd: {f} does not follow the FSDD naming {{digit}}_{{speaker}}_{{index}}.wav")
            clips.append((f, int(m.group(1)), int(m.group(3)) < self.config.test_indices))
        if not clips:
            raise DataError(f"fsdd: no .wav files in {root}; expected {expected}")
        if all(c[2] for c in clips) or not any(c[2] for c in clips):
            raise DataError(f"fsdd: {root}: the official split by index leaves the train or the test set empty")
        return clips, [str(d) for d in range(10)], True


class WavFolderConfig(AudioConfig):
    path: str = Field(..., description="root folder laid out as root/<class_name>/*.wav")
    test_path: Optional[str] = Field(None, description="a separate test folder with the same classes (else 20 % is held out)")
    label_regex: Optional[str] = Field(
        None, description="take the label from the file name instead of the folder: a regular expression whose "
        "first group is the label, matched against every root/*.wav (e.g. '^(\\d+)_' for FSDD names)")
    duration: float = Field(1.0, gt=0, le=60)

    @field_validator("label_regex")
    @classmethod
    def _one_group(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            try:
                groups = re.compile(v).groups
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
            if groups < 1:
                raise ValueError("needs a group '(...)' that captures the label")
        return v


class WavFolderTask(AudioTask):
    """A user's labelled WAV files in ``root/<class_name>/*.wav``, or in ``root/*.wav``
    with the label in the file name (``label_regex``)."""

    name = "wav_folder"
    description = "a folder of WAV files, one sub-folder per class; log-mel features, accuracy"
    Config = WavFolderConfig

    def _layout(self) -> str:
        if self.config.label_regex:
            return f"root/*.wav, the label in each file name by label_regex {self.config.label_regex!r}"
        return "root/<class_name>/*.wav"

    def _scan(self, root: Path, classes: list[str] | None = None) -> tuple[list[tuple[Path, str]], list[str]]:
        expected = self._layout()
        if not root.is_dir():
            raise DataError(f"wav_folder: {root} is not a folder; expected {expected}")
        if self.config.label_regex:
            return self._scan_names(root, classes)
        found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if classes is None:
            if len(found) < 2:
                raise DataError(f"wav_folder: {root} has {len(found)} class folder(s); expected at least 2 ({expected})")
            classes = found
        elif set(found) - set(classes):
            raise DataError(f"wav_folder: {root} has class folders {sorted(set(found) - set(classes))} "
                            f"that the training folder does not have")
        items = []
        for cls in found:
            wavs = sorted(f for f in (root / cls).iterdir() if f.suffix.lower() == ".wav")
            if not wavs:
                raise DataError(f"wav_folder: {root / cls} holds no .wav files ({WAV_FORMAT})")
            items += [(f, cls) for f in wavs]
        return items, classes

    def _scan_names(self, root: Path, classes: list[str] | None) -> tuple[list[tuple[Path, str]], list[str]]:
        pattern = re.compile(self.config.label_regex)
        items = []
        for f in sorted(p for p in root.iterdir() if p.suffix.lower() == ".wav"):
            m = pattern.search(f.name)
            if m is None or not m.group(1):
                raise DataError(f"wav_folder: {f} does not match label_regex {pattern.pattern!r}")
            items.append((f, m.group(1)))
        found = sorted({c for _, c in items}, key=lambda c: (len(c), c) if c.isdigit() else (0, c))
        if classes is None:
            if len(found) < 2:
                raise DataError(f"wav_folder: {root} has {len(found)} label(s) by label_regex; expected at least 2 "
                                f"({self._layout()})")
            classes = found
        elif set(found) - set(classes):
            raise DataError(f"wav_folder: {root} has labels {sorted(set(found) - set(classes))} "
                            f"that the training folder does not have")
        return items, classes

    def clips(self):
        cfg = self.config
        root = resolve_path(cfg.path, "", "wav_folder", self._layout())
        items, classes = self._scan(root)
        index = {c: i for i, c in enumerate(classes)}
        clips = [(f, index[c], False) for f, c in items]
        if cfg.test_path is None:
            return clips, classes, False
        titems, _ = self._scan(resolve_path(cfg.test_path, "", "wav_folder", self._layout()), classes)
        return clips + [(f, index[c], True) for f, c in titems], classes, True


# ---------------------------------------------------------------------------------
# MNIST-1D
# ---------------------------------------------------------------------------------


class MNIST1DConfig(SequenceFeatureConfig):
    path: Optional[str] = Field(None, description="mnist1d_data.pkl (default: <data root>/signal/mnist1d_data.pkl)")


class MNIST1DTask(SequenceFeatureTask):
    """MNIST-1D (Greydanus, 2020): 1-D signals of length 40, 10 classes, 4,000 train /
    1,000 test as stored. Loaded with a restricted unpickler (numpy arrays only).
    Published test accuracies: logistic 32 %, MLP 68 %, CNN 94 %, GRU 91 %."""

    name = "mnist1d"
    default_data = "signal/mnist1d_data.pkl"
    description = "MNIST-1D signals (pickle, loaded safely), accuracy"
    Config = MNIST1DConfig

    #: Published reference accuracies (mnist1d README / paper, Greydanus 2020).
    REFERENCE = {"logistic": 0.32, "mlp": 0.68, "cnn": 0.94, "gru": 0.91, "human": 0.96}

    def read(self):
        p = resolve_path(self.config.path, self.default_data, "mnist1d", MNIST1D_FORMAT)
        if p.is_dir():
            p = p / "mnist1d_data.pkl"
        x, y, tx, ty = read_mnist1d(p)
        return x[:, None, :], y, tx[:, None, :], ty, [str(d) for d in range(10)]

    def feature_info(self) -> dict[str, Any]:
        return {"features": "raw signal", "channels": 1}
