"""Readers for audio and signal data in their original distribution formats.

* WAV: read with the standard library's :mod:`wave` (PCM 8/16/24/32-bit integer,
  any channel count, averaged to mono) into float32 in [-1, 1].
* MNIST-1D: the ``mnist1d_data.pkl`` pickle of the mnist1d package (a dict with
  ``x, y, x_test, y_test``). A pickle can run arbitrary code when loaded, so it is
  loaded with :class:`SafeUnpickler`, which only allows numpy arrays and dtypes and
  plain Python containers; anything else is a :class:`DataError` and nothing of it is
  executed.
"""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import numpy as np
from dnas_tasks._common import SafeUnpickler

from dnas_core import DataError

WAV_FORMAT = "a PCM WAV file (8/16/24/32-bit integer samples)"
MNIST1D_FORMAT = "the mnist1d pickle: a dict with numpy arrays 'x' (N, L), 'y' (N,), 'x_test', 'y_test'"


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(mono samples float32 in [-1, 1], sample rate)."""
    p = Path(path)
    try:
        with wave.open(str(p), "rb") as w:
            channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(frames)
    except FileNotFoundError:
        raise DataError(f"{p}: file not found; expected {WAV_FORMAT}") from None
    except (wave.Error, EOFError, OSError, RuntimeError, ValueError, struct.error) as exc:  # RuntimeError: bad chunk
        raise DataError(f"{p}: not a readable WAV file ({type(exc).__name__}: {exc}); expected {WAV_FORMAT}") from None
    if width not in (1, 2, 3, 4) or channels < 1:
        raise DataError(f"{p}: unsupported WAV sample width {width} bytes; expected {WAV_FORMAT}")
    usable = len(raw) - len(raw) % (width * channels)
    if usable == 0:
        raise DataError(f"{p}: WAV file has no audio frames")
    raw = raw[:usable]
    if width == 1:  # 8-bit WAV is unsigned
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / float(1 << 23)
    else:
        dtype = {2: "<i2", 4: "<i4"}[width]
        x = np.frombuffer(raw, dtype=dtype).astype(np.float32) / float(1 << (8 * width - 1))
    x = x.reshape(-1, channels).mean(axis=1)
    return x.astype(np.float32), rate


def safe_load_pickle(path: str | Path) -> object:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{p}: file not found; expected {MNIST1D_FORMAT}") from None
    except OSError as exc:
        raise DataError(f"{p}: cannot read ({exc.strerror or exc}); expected {MNIST1D_FORMAT}") from None
    try:
        return SafeUnpickler(io.BytesIO(raw), p).load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a malformed file
        raise DataError(f"{p}: not a valid pickle ({type(exc).__name__}: {exc}); expected {MNIST1D_FORMAT}") from None


def read_mnist1d(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x (N, L) float32, y (N,), x_test, y_test)."""
    p = Path(path)
    data = safe_load_pickle(p)
    if not isinstance(data, dict):
        raise DataError(f"{p}: the pickle holds a {type(data).__name__}; expected {MNIST1D_FORMAT}")
    missing = [k for k in ("x", "y", "x_test", "y_test") if k not in data]
    if missing:
        raise DataError(f"{p}: keys {missing} missing; expected {MNIST1D_FORMAT}")
    out = []
    for kx, ky in (("x", "y"), ("x_test", "y_test")):
        x, y = data[kx], data[ky]
        if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray) or x.ndim != 2 or y.ndim != 1 \
                or len(x) != len(y) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{p}: {kx} / {ky} are not arrays of shape (N, L) / (N,) integer; expected {MNIST1D_FORMAT}")
        out += [x.astype(np.float32), y.astype(np.int64)]
    if out[0].shape[1] != out[2].shape[1]:
        raise DataError(f"{p}: train signals have length {out[0].shape[1]}, test signals {out[2].shape[1]}")
    return out[0], out[1], out[2], out[3]
