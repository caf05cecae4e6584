"""Progress output: a live tqdm bar on a terminal, plain periodic lines elsewhere.

The bar shows the stage, epoch, loss, the metric and the ETA. When stderr is not a
terminal (CI logs, files) one line is printed per epoch, plus one every
``line_interval`` seconds inside long epochs.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from tqdm import tqdm


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):
        return False


def _fmt(metrics: dict[str, Any]) -> str:
    parts = []
    for k, v in metrics.items():
        if isinstance(v, float):
            parts.append(f"{k}={v:.4g}")
        elif isinstance(v, int):
            parts.append(f"{k}={v}")
    return " ".join(parts)


class Progress:
    """Progress of one stage over ``epochs`` epochs of ``steps_per_epoch`` steps."""

    def __init__(
        self,
        stage: str,
        epochs: int,
        steps_per_epoch: int,
        start_epoch: int = 0,
        stream: TextIO | None = None,
        enabled: bool = True,
        line_interval: float = 30.0,
    ):
        self.stage = stage
        self.epochs = epochs
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.stream = stream or sys.stderr
        self.enabled = enabled and os.environ.get("DNAS_PROGRESS", "1") != "0"
        self.tty = _is_tty(self.stream)
        self.line_interval = line_interval
        self.t0 = time.perf_counter()
        self.done_steps = 0
        self.start_step = start_epoch * self.steps_per_epoch
        self.epoch = start_epoch
        self._last_line = self.t0
        self._bar: tqdm | None = None
        total = epochs * self.steps_per_epoch
        if self.enabled and self.tty:
            self._bar = tqdm(
                total=total, initial=self.start_step, desc=stage, unit="step", file=self.stream,
                dynamic_ncols=True, leave=True,
            )

    def step(self, **metrics: Any) -> None:
        self.done_steps += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(1)
            if metrics and self.done_steps % 5 == 0:
                self._bar.set_postfix_str(f"epoch {self.epoch + 1}/{self.epochs} " + _fmt(metrics), refresh=False)
        elif time.perf_counter() - self._last_line > self.line_interval:
            self._line(f"epoch {self.epoch + 1}/{self.epochs} step {self.done_steps % self.steps_per_epoch} " + _fmt(metrics))

    def end_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.epoch = epoch + 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(f"epoch {epoch + 1}/{self.epochs} " + _fmt(metrics))
        else:
            self._line(f"epoch {epoch + 1}/{self.epochs} {_fmt(metrics)}")

    def _line(self, text: str) -> None:
        now = time.perf_counter()
        self._last_line = now
        elapsed = now - self.t0
        remaining_steps = self.epochs * self.steps_per_epoch - self.start_step - self.done_steps
        eta = elapsed / self.done_steps * remaining_steps if self.done_steps else float("nan")
        print(f"[{self.stage}] {text} | elapsed {elapsed:.0f}s eta {eta:.0f}s", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def log(message: str, stream: TextIO | None = None) -> None:
    """A plain status line (stage starts, summaries)."""
    if os.environ.get("DNAS_PROGRESS", "1") == "0":
        return
    print(message, file=stream or sys.stderr, flush=True)
