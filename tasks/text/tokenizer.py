"""A word-level tokenizer with a vocabulary built from the training split.

No download and no external model: text is lower-cased (optional), runs of 4+ digits
become ``<num>`` (optional; phone numbers and prize codes in SMS spam), and split
into words (with inner apostrophes) and single punctuation marks. The vocabulary
keeps the most frequent tokens of the training texts; id 0 is padding and id 1 the
unknown token. Sequences are cut or padded to ``max_len`` ids.

The tokenizer is saved beside the model of a run (``tokenizer.json``) so that an
exported model and the tokenizer that feeds it travel together::

    tok = Tokenizer.load("runs/sst2-.../tokenizer.json")
    ids = tok.encode(["a gripping , funny film"])   # int64 array (1, max_len)
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

PAD, UNK, NUM = "<pad>", "<unk>", "<num>"
_TOKEN = re.compile(r"<num>|[^\W\d_]+(?:'[^\W\d_]+)*|\d+|[^\w\s]", re.UNICODE)
_LONG_NUMBER = re.compile(r"\d{4,}")
FORMAT_VERSION = 1


class Tokenizer:
    def __init__(self, vocab: Sequence[str], max_len: int, lowercase: bool = True, numbers: bool = True):
        if list(vocab[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary must start with {PAD!r}, {UNK!r}")
        self.vocab = list(vocab)
        self.index = {tok: i for i, tok in enumerate(self.vocab)}
        self.max_len = int(max_len)
        self.lowercase = lowercase
        self.numbers = numbers

    # -- building -------------------------------------------------------------------
    @staticmethod
    def split(text: str, lowercase: bool = True, numbers: bool = True) -> list[str]:
        if lowercase:
            text = text.lower()
        if numbers:
            text = _LONG_NUMBER.sub(f" {NUM} ", text)
        return _TOKEN.findall(text)

    @classmethod
    def build(cls, texts: Iterable[str], max_len: int, max_size: int = 20000, min_freq: int = 2,
              lowercase: bool = True, numbers: bool = True) -> Tokenizer:
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(cls.split(text, lowercase, numbers))
        # Most frequent first, ties broken alphabetically: the same texts give the same ids.
        kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls([PAD, UNK, *kept[: max(0, max_size - 2)]], max_len, lowercase, numbers)

    # -- use ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids ``(len(texts), max_len)`` int64: cut at ``max_len``, padded with 0."""
        out = np.zeros((len(texts), self.max_len), dtype=np.int64)
        unk = self.index[UNK]
        for row, text in enumerate(texts):
            ids = [self.index.get(t, unk) for t in self.split(text, self.lowercase, self.numbers)[: self.max_len]]
            out[row, : len(ids)] = ids
        return out

    def coverage(self, texts: Sequence[str]) -> float:
        """Share of tokens of ``texts`` that are in the vocabulary."""
        total = known = 0
        for text in texts:
            toks = self.split(text, self.lowercase, self.numbers)
            total += len(toks)
            known += sum(t in self.index for t in toks)
        return known / total if total else 1.0

    # -- persistence ----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format": "dnas-word-tokenizer", "version": FORMAT_VERSION, "max_len": self.max_len,
                "lowercase": self.lowercase, "numbers": self.numbers, "pattern": _TOKEN.pattern,
                "padding_id": 0, "unknown_id": 1, "vocab": self.vocab}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tokenizer:
        if not isinstance(data, dict) or data.get("format") != "dnas-word-tokenizer":
            raise ValueError("not a dnas tokenizer file (format != 'dnas-word-tokenizer')")
        return cls(data["vocab"], data["max_len"], data["lowercase"], data["numbers"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
