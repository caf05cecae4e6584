"""Fuzzing the data-file parsers and the manifest loader with hypothesis.

Every malformed input must end in a clear :class:`~dnas_core.DnasError` (a message
naming the file and the expected format), never another exception, a hang or a crash.
:func:`fuzz_target` feeds one parser ``n`` inputs (random bytes and mutations of a
valid sample: bit flips, truncations, insertions, header edits), each under a time
limit, and counts the outcomes. ``tests/test_security_fuzz.py`` and
``benchmarks/fuzz.py`` use it; a plugin author can add a target for a new parser.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib
import io
import signal
import struct
import tempfile
import traceback
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DnasError


@dataclass
class FuzzTarget:
    """A parser ``parse(path)`` and one valid sample of its format (bytes)."""

    name: str
    suffix: str
    parse: Callable[[Path], Any]
    sample: bytes


@dataclass
class FuzzStats:
    name: str
    tried: int = 0
    accepted: int = 0
    clear_errors: int = 0
    unclear: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"parser": self.name, "inputs_tried": self.tried, "accepted": self.accepted,
                "clear_errors": self.clear_errors, "unclear_failures": len(self.unclear),
                "examples": self.unclear[:5]}


# -- valid samples ---------------------------------------------------------------------


def _idx_sample() -> bytes:
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    return gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 3, 4) + data.tobytes(), mtime=0)


def _wav_sample() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((np.sin(np.arange(64) / 3) * 2000).astype("<i2").tobytes())
    return buf.getvalue()


def _npz_sample() -> bytes:
    buf = io.BytesIO()
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = np.zeros((2, 4, 4), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.array([[0], [1]], dtype=np.uint8)
    np.savez(buf, **arrays)
    return buf.getvalue()


def _mnist1d_sample() -> bytes:
    import pickle

    d = {"x": np.zeros((2, 5), np.float32), "y": np.array([0, 1]), "x_test": np.zeros((1, 5), np.float32),
         "y_test": np.array([1]), "t": np.arange(5), "templates": {}}
    return pickle.dumps(d, protocol=4)


def _cifar_batch_sample() -> bytes:
    import pickle

    return pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"batch_label": b"b1"}, protocol=4)


def default_targets() -> list[FuzzTarget]:
    """The parsers of the installed built-in tasks (those whose module is present)."""
    targets: list[FuzzTarget] = []

    def add(module: str, attr: str, name: str, suffix: str, sample: Callable[[], bytes],
            call: Callable[[Callable, Path], Any] | None = None) -> None:
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return
        parse = (lambda p, fn=fn: call(fn, p)) if call else fn
        targets.append(FuzzTarget(name, suffix, parse, sample()))

    add("dnas_tasks.vision.readers", "read_idx", "IDX (vision)", ".gz", _idx_sample)
    add("dnas_tasks.audio.readers", "read_wav", "WAV (audio)", ".wav", _wav_sample)
    add("dnas_tasks.audio.readers", "read_mnist1d", "mnist1d pickle (audio)", ".pkl", _mnist1d_sample)
    add("dnas_tasks.vision.readers", "_unpickle_cifar", "CIFAR batch pickle (vision)", "", _cifar_batch_sample,
        call=lambda fn, p: fn("cifar10", p.read_bytes(), str(p)))
    add("dnas_tasks.text.readers", "read_sst2", "SST-2 TSV (text)", ".tsv",
        lambda: b"label\tsentence\n1\ta fine film\n0\tdull\n")
    add("dnas_tasks.text.readers", "read_sms_spam", "SMS spam TSV (text)", ".txt",
        lambda: b"ham\tsee you at 5\nspam\tWIN a prize now\n")
    add("dnas_tasks.text.readers", "read_label_text", "label,text CSV (text)", ".csv",
        lambda: b"label,text\npos,good\nneg,bad\n")
    add("dnas_tasks.recsys.tasks", "read_u_data", "u.data (recsys)", ".data",
        lambda: b"1\t10\t4\t881250949\n2\t11\t3\t891717742\n")
    add("dnas_tasks.recsys.tasks", "read_ratings_csv", "ratings CSV (recsys)", ".csv",
        lambda: b"user,item,time,rating\nu1,i1,10,4\nu2,i2,11,5\n",
        call=lambda fn, p: fn(p, "user", "item", "time", "rating", None))
    add("dnas_tasks.medical.tasks", "read_medmnist", "MedMNIST npz (medical)", ".npz", _npz_sample,
        call=lambda fn, p: fn(p, "fuzz"))
    return targets


# -- running ---------------------------------------------------------------------------


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise :class:`_Timeout` after ``seconds`` (main thread, POSIX)."""
    def handler(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def check_input(target: FuzzTarget, data: bytes, folder: Path, stats: FuzzStats, limit_s: float = 5.0) -> None:
    """Parse ``data`` once and record the outcome in ``stats``."""
    path = folder / f"input{target.suffix}"
    path.write_bytes(data)
    stats.tried += 1
    try:
        with time_limit(limit_s):
            target.parse(path)
        stats.accepted += 1
    except DnasError as exc:
        if str(path) in str(exc) or path.name in str(exc):
            stats.clear_errors += 1
        else:
            stats.unclear.append(f"DnasError without the file name: {exc} <- {data[:40]!r}")
    except _Timeout:
        stats.unclear.append(f"hang over {limit_s}s <- {data[:40]!r}")
    except Exception as exc:  # noqa: BLE001 - exactly what the fuzzer looks for
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        stats.unclear.append(f"{type(exc).__name__}: {exc} at {Path(tb.filename).name}:{tb.lineno} <- {data[:40]!r}")


def input_strategy(sample: bytes):
    """Hypothesis strategy: random bytes, or the valid sample mutated."""
    from hypothesis import strategies as st

    n = len(sample)

    def mutate(ops):
        b = bytearray(sample)
        for kind, pos, val in ops:
            if not b:
                break
            i = pos % len(b)
            if kind == 0:
                b[i] ^= 1 << (val % 8)
            elif kind == 1:
                del b[i:]
            elif kind == 2:
                b[i:i] = bytes([val % 256]) * (1 + val % 7)
            else:
                b[i] = val % 256
        return bytes(b)

    ops = st.lists(st.tuples(st.integers(0, 3), st.integers(0, max(n, 1) * 4), st.integers(0, 2**16)),
                   min_size=1, max_size=6)
    return st.one_of(st.binary(max_size=300), ops.map(mutate), st.just(sample[: n // 2]), st.just(b""))


def fuzz_target(target: FuzzTarget, n: int, seed: int = 0, limit_s: float = 5.0) -> FuzzStats:
    """Feed ``target`` ``n`` hypothesis-generated inputs; returns the counts."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    stats = FuzzStats(target.name)
    with tempfile.TemporaryDirectory(prefix="dnas-fuzz-") as tmp:
        folder = Path(tmp)

        @hseed(seed)
        @settings(max_examples=n, deadline=None, database=None, derandomize=False,
                  suppress_health_check=list(HealthCheck))
        @given(input_strategy(target.sample))
        def run(data: bytes) -> None:
            check_input(target, data, folder, stats, limit_s)

        run()
    return stats


__all__ = ["FuzzStats", "FuzzTarget", "check_input", "default_targets", "fuzz_target", "input_strategy", "time_limit"]
