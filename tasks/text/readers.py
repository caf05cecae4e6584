"""Readers for text classification data in its original distribution formats.

All are plain-text parsers (``csv`` module, line splitting); errors name the file,
the line and the expected format.

* SST-2 (GLUE): TSV with a header row, ``label<TAB>sentence`` (or ``content``), label
  0 (negative) / 1 (positive).
* SMS Spam Collection (UCI): no header, one message a line, ``ham|spam<TAB>text``.
* A user's CSV/TSV with the columns ``label, text`` (a header row is optional).
"""

from __future__ import annotations

import csv
from pathlib import Path

from dnas_core import DataError

SST2_FORMAT = "a TSV file with a header row 'label<TAB>sentence' and labels 0/1 (GLUE SST-2)"
SMS_FORMAT = "the UCI SMS Spam Collection: one message a line, 'ham<TAB>text' or 'spam<TAB>text'"
CSV_FORMAT = "a CSV/TSV file with two columns 'label, text' (header row optional)"


def _read_lines(path: Path, expected: str) -> list[str]:
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder; expected {expected}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc}); expected {expected}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # the original UCI file has a few non-UTF-8 bytes
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise DataError(f"{path}: empty file; expected {expected}")
    return lines


def read_sst2(path: str | Path) -> tuple[list[str], list[int]]:
    p = Path(path)
    lines = _read_lines(p, SST2_FORMAT)
    header = lines[0].rstrip("\n").split("\t")
    if len(header) != 2 or header[0].strip().lower() != "label":
        raise DataError(f"{p}: line 1 is {lines[0][:60]!r}, not a header 'label<TAB>sentence'; expected {SST2_FORMAT}")
    texts, labels = [], []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t", 1)
        if len(parts) != 2 or parts[0].strip() not in ("0", "1"):
            raise DataError(f"{p}: line {n} is {line[:60]!r}; expected 'label<TAB>sentence' with label 0 or 1")
        labels.append(int(parts[0]))
        texts.append(parts[1].strip())
    if not texts:
        raise DataError(f"{p}: no examples after the header; expected {SST2_FORMAT}")
    return texts, labels


def read_sms_spam(path: str | Path) -> tuple[list[str], list[int]]:
    """Labels: ham = 0, spam = 1."""
    p = Path(path)
    texts, labels = [], []
    for n, line in enumerate(_read_lines(p, SMS_FORMAT), start=1):
        if not line.strip():
            continue
        label, sep, text = line.partition("\t")
        if not sep or label not in ("ham", "spam"):
            raise DataError(f"{p}: line {n} is {line[:60]!r}; expected {SMS_FORMAT}")
        labels.append(int(label == "spam"))
        texts.append(text.strip())
    return texts, labels


def read_label_text(path: str | Path, delimiter: str | None = None) -> tuple[list[str], list[str]]:
    """(texts, label strings) of a ``label, text`` CSV/TSV. The delimiter defaults to a
    tab for ``.tsv``/``.tab`` files and a comma otherwise. A first row reading
    ``label, text`` is a header and skipped."""
    p = Path(path)
    delim = delimiter or ("\t" if p.suffix.lower() in (".tsv", ".tab") else ",")
    lines = _read_lines(p, CSV_FORMAT)
    texts, labels = [], []
    for n, row in enumerate(csv.reader(lines, delimiter=delim), start=1):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) < 2:
            raise DataError(f"{p}: line {n} has {len(row)} column(s) with delimiter {delim!r}; expected {CSV_FORMAT}")
        label, text = row[0].strip(), delim.join(row[1:]).strip()
        if n == 1 and label.lower() == "label" and text.lower() in ("text", "sentence", "content"):
            continue
        if not label:
            raise DataError(f"{p}: line {n} has an empty label; expected {CSV_FORMAT}")
        labels.append(label)
        texts.append(text)
    if not texts:
        raise DataError(f"{p}: no rows; expected {CSV_FORMAT}")
    return texts, labels
