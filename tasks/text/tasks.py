"""Text classification tasks: SST-2, SMS Spam Collection, a user's CSV/TSV.

The data are word-token ids ``(N, max_len)`` (int64, 0 = padding) from a
:class:`~dnas_tasks.text.tokenizer.Tokenizer` whose vocabulary is built from the
training split only. The stem is an embedding to ``(N, C, L)``, the head pools over
``L`` (mean and max) and classifies. Metrics: accuracy and macro-F1 (scikit-learn).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.utils.data import TensorDataset

from dnas_core import ComponentConfig, DataError, IOSpec, Task, TaskData
from dnas_tasks._common import check_labels, resolve_path, stratified_split, subsample
from dnas_tasks._sequence import SequenceHead, TokenStem

from .readers import CSV_FORMAT, SMS_FORMAT, SST2_FORMAT, read_label_text, read_sms_spam, read_sst2
from .tokenizer import Tokenizer


class TextConfig(ComponentConfig):
    max_len: int = Field(64, ge=4, le=4096, description="tokens per example: longer texts are cut, shorter padded")
    vocab_size: int = Field(20000, ge=16, description="largest vocabulary (incl. padding and unknown)")
    min_freq: int = Field(2, ge=1, description="a token enters the vocabulary when seen this often in training")
    lowercase: bool = True
    numbers: bool = Field(True, description="map runs of 4+ digits to one <num> token")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="share of the training data held out as validation")
    limit_train: Optional[int] = Field(None, ge=10, description="use at most this many training examples (stratified)")
    limit_test: Optional[int] = Field(None, ge=10, description="use at most this many test examples (stratified)")
    split_seed: int = Field(0, ge=0, description="seed of the train/val(/test) split, fixed across run seeds")
    embed_dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the token embeddings")
    head_dropout: float = Field(0.2, ge=0, lt=1, description="dropout before the classifier")


def macro_f1(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(target, pred, average="macro", labels=list(range(num_classes)), zero_division=0))


class TextTask(Task):
    """Base of text classification tasks: subclasses implement :meth:`read`."""

    Config = TextConfig
    primary_metric = "accuracy"
    #: Share held out as test when the data set has no test split.
    test_fraction: ClassVar[float] = 0.2

    tokenizer: Tokenizer | None = None

    def read(self) -> tuple[list[str], np.ndarray, list[str] | None, np.ndarray | None, list[str]]:
        """(train texts, train labels, test texts or None, test labels or None, class names)."""
        raise NotImplementedError

    def _raw(self):
        if not hasattr(self, "_cache"):
            self._cache = self.read()
        return self._cache

    def load_data(self, seed: int) -> TaskData:
        cfg = self.config
        texts, y, ttexts, ty, classes = self._raw()
        y = np.asarray(y, dtype=np.int64)
        check_labels(y, len(classes), self.name)
        if ttexts is None:
            keep, held = stratified_split(y, self.test_fraction, cfg.split_seed)
            ttexts, ty = [texts[i] for i in held], y[held]
            texts, y = [texts[i] for i in keep], y[keep]
        ty = np.asarray(ty, dtype=np.int64)
        tr = subsample(np.arange(len(y)), cfg.limit_train, y, cfg.split_seed)
        te = subsample(np.arange(len(ty)), cfg.limit_test, ty, cfg.split_seed + 1)
        texts, y = [texts[i] for i in tr], y[tr]
        ttexts, ty = [ttexts[i] for i in te], ty[te]
        try:
            train, val = stratified_split(y, cfg.val_fraction, cfg.split_seed)
        except ValueError as exc:  # too few examples to hold out every class
            raise DataError(f"{self.name}: cannot hold out val_fraction={cfg.val_fraction} of "
                            f"{len(y)} training examples: {exc}") from None
        # The vocabulary comes from the texts of the training data, validation part
        # included (word counts only, no labels; never the test texts): a retrain on
        # train + val (``include_val``) then knows every word it trains on, and on
        # small subsets of SST-2 it covers noticeably more of the test tokens.
        self.tokenizer = Tokenizer.build(texts, cfg.max_len, cfg.vocab_size, cfg.min_freq,
                                         cfg.lowercase, cfg.numbers)
        ids = torch.from_numpy(self.tokenizer.encode(texts))
        tids = torch.from_numpy(self.tokenizer.encode(ttexts))
        yt, tyt = torch.from_numpy(y), torch.from_numpy(ty)
        return TaskData(
            train=TensorDataset(ids[train], yt[train]),
            val=TensorDataset(ids[val], yt[val]),
            test=TensorDataset(tids, tyt),
        )

    def io_spec(self) -> IOSpec:
        classes = self._raw()[4]
        return IOSpec("sequence", (self.config.max_len,), len(classes), input_dtype=torch.int64,
                      body_size=(self.config.max_len,),
                      extra={"classes": list(classes), "vocab_size": len(self.tokenizer) if self.tokenizer else None})

    def make_stem(self, channels: int) -> nn.Module:
        if self.tokenizer is None:
            raise RuntimeError("load_data() must run before make_stem(): the vocabulary comes from the training split")
        return TokenStem(len(self.tokenizer), channels, padding_idx=0, dropout=self.config.embed_dropout)

    def make_head(self, channels: int) -> nn.Module:
        return SequenceHead(channels, self.io_spec().num_outputs, dropout=self.config.head_dropout)

    def compute_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        pred = outputs.argmax(dim=1).numpy()
        target = targets.numpy()
        return {"accuracy": float((pred == target).mean()),
                "macro_f1": macro_f1(pred, target, self.io_spec().num_outputs)}

    def run_files(self) -> dict[str, Any]:
        """Files written into the run directory at the start of a run (see the
        ``dnas_run_start`` hook of this plugin): the tokenizer that feeds the model."""
        if self.tokenizer is None:
            return {}
        return {"tokenizer.json": {**self.tokenizer.to_json(), "classes": list(self._raw()[4]), "task": self.name}}


class SST2Config(TextConfig):
    path: Optional[str] = Field(None, description="folder with train.tsv and test.tsv (default: <data root>/text/sst2)")
    test_file: str = Field("test.tsv", description="file of the test split: test.tsv (labelled SST test) or dev.tsv (GLUE dev)")
    max_len: int = Field(48, ge=4, le=4096)


class SST2Task(TextTask):
    """SST-2 binary sentence sentiment (GLUE TSV). Train on ``train.tsv`` (67,349
    phrases), test on the labelled ``test.tsv`` (1,821 sentences) or ``dev.tsv``."""

    name = "sst2"
    default_data = "text/sst2"
    description = "SST-2 sentiment (GLUE TSV files), accuracy and macro-F1"
    Config = SST2Config

    def read(self):
        root = resolve_path(self.config.path, self.default_data, "sst2", f"a folder with train.tsv and {self.config.test_file}: {SST2_FORMAT}")
        if root.is_file():
            raise DataError(f"sst2: {root} is a file; expected a folder with train.tsv and {self.config.test_file}")
        for name in ("train.tsv", self.config.test_file):
            if not (root / name).is_file():
                raise DataError(f"sst2: {root / name} not found; expected {SST2_FORMAT}")
        texts, y = read_sst2(root / "train.tsv")
        ttexts, ty = read_sst2(root / self.config.test_file)
        return texts, np.asarray(y), ttexts, np.asarray(ty), ["negative", "positive"]


class SMSSpamConfig(TextConfig):
    path: Optional[str] = Field(None, description="the SMSSpamCollection file or its folder (default: <data root>/text/sms-spam)")
    max_len: int = Field(64, ge=4, le=4096)


class SMSSpamTask(TextTask):
    """UCI SMS Spam Collection (5,574 messages, 13 % spam). No official split: a
    stratified 20 % is held out as the test split (``split_seed``)."""

    name = "sms_spam"
    default_data = "text/sms-spam"
    description = "UCI SMS Spam Collection, ham/spam, accuracy and macro-F1"
    Config = SMSSpamConfig

    def read(self):
        p = resolve_path(self.config.path, self.default_data, "sms_spam", SMS_FORMAT)
        if p.is_dir():
            p = p / "SMSSpamCollection"
            if not p.is_file():
                raise DataError(f"sms_spam: {p} not found; expected {SMS_FORMAT}")
        texts, y = read_sms_spam(p)
        return texts, np.asarray(y), None, None, ["ham", "spam"]


class TextFileConfig(TextConfig):
    path: str = Field(..., description="CSV/TSV file of 'label, text' rows")
    test_path: Optional[str] = Field(None, description="a separate test file in the same format (else 20 % is held out)")
    delimiter: Optional[str] = Field(None, min_length=1, max_length=1,
                                     description="column delimiter (default: tab for .tsv/.tab, comma otherwise)")


class TextFileTask(TextTask):
    """A user's text classification data: ``label, text`` rows in a CSV or TSV file.
    Labels may be any strings; classes are their sorted distinct values."""

    name = "text_file"
    description = "a user's CSV/TSV of 'label, text' rows, accuracy and macro-F1"
    Config = TextFileConfig

    def read(self):
        cfg = self.config
        p = resolve_path(cfg.path, "", "text_file", CSV_FORMAT)
        texts, labels = read_label_text(p, cfg.delimiter)
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise DataError(f"text_file: {p} has {len(classes)} distinct label(s); expected at least 2 classes")
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[c] for c in labels], dtype=np.int64)
        if cfg.test_path is None:
            return texts, y, None, None, classes
        tp = resolve_path(cfg.test_path, "", "text_file", CSV_FORMAT)
        ttexts, tlabels = read_label_text(tp, cfg.delimiter)
        unknown = sorted(set(tlabels) - set(classes))
        if unknown:
            raise DataError(f"text_file: {tp} has labels {unknown[:5]} that the training file {p} does not have")
        return texts, y, ttexts, np.array([index[c] for c in tlabels], dtype=np.int64), classes
