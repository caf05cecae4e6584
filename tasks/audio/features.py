"""Log-mel spectrograms computed with torch only (``torch.stft`` and a mel filterbank
built here; no torchaudio, no download).

The filterbank is the usual triangular one on the HTK mel scale
(``mel = 2595 log10(1 + f / 700)``), filters normalised to unit area (Slaney-style),
as in librosa's ``htk=True, norm='slaney'``.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """``(n_mels, n_fft // 2 + 1)`` triangular filters."""
    f_max = f_max or sample_rate / 2
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / (centre - lower)
    down = (upper - freqs[None]) / (upper - centre)
    fb = np.maximum(0.0, np.minimum(up, down))
    fb *= (2.0 / (upper - lower))  # equal area
    return torch.from_numpy(fb.astype(np.float32))


def fix_length(waves: list[np.ndarray], length: int) -> torch.Tensor:
    """Cut or zero-pad (at the end) every waveform to ``length`` samples: ``(N, length)``."""
    out = torch.zeros(len(waves), length)
    for i, w in enumerate(waves):
        n = min(len(w), length)
        out[i, :n] = torch.from_numpy(w[:n])
    return out


def log_mel(waves: torch.Tensor, sample_rate: int, n_fft: int, hop: int, n_mels: int,
            batch: int = 256) -> torch.Tensor:
    """``(N, samples)`` -> log-mel ``(N, n_mels, frames)`` with frames = samples // hop + 1."""
    window = torch.hann_window(n_fft)
    fb = mel_filterbank(sample_rate, n_fft, n_mels)
    outs = []
    for start in range(0, waves.shape[0], batch):
        spec = torch.stft(waves[start:start + batch], n_fft, hop_length=hop, window=window, center=True,
                          pad_mode="reflect", return_complex=True)
        power = spec.real.square() + spec.imag.square()  # (n, freq, frames)
        outs.append(torch.log(torch.matmul(fb, power) + 1e-6))
    return torch.cat(outs) if outs else torch.zeros(0, n_mels, waves.shape[1] // hop + 1)


def num_frames(samples: int, hop: int) -> int:
    return samples // hop + 1


def seconds_to_samples(seconds: float, rate: int) -> int:
    return int(math.floor(seconds * rate))
