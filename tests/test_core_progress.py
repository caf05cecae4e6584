"""Progress output: a live bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from dnas_core.progress import Progress


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_live_bar_with_epoch_loss_metric_and_eta(monkeypatch):
    monkeypatch.setenv("DNAS_PROGRESS", "1")
    monkeypatch.setenv("TERM", "xterm")
    out = _TTY()
    with Progress("search", epochs=2, steps_per_epoch=5, stream=out) as bar:
        for epoch in range(2):
            for _ in range(5):
                bar.step(loss=0.5)
            bar.end_epoch(epoch, {"train_loss": 0.5, "val_accuracy": 0.9})
    text = out.getvalue()
    assert "\r" in text  # redrawn in place
    assert "search" in text and "10/10" in text and "epoch 2/2" in text and "val_accuracy=0.9" in text
    assert "<" in text  # tqdm's elapsed<remaining (ETA)


def test_non_terminal_gets_plain_lines_per_epoch(monkeypatch):
    monkeypatch.setenv("DNAS_PROGRESS", "1")
    out = io.StringIO()
    with Progress("retrain", epochs=3, steps_per_epoch=4, stream=out) as bar:
        for epoch in range(3):
            for _ in range(4):
                bar.step(loss=1.0)
            bar.end_epoch(epoch, {"train_loss": 1.0})
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in out.getvalue()
    assert lines[-1].startswith("[retrain] epoch 3/3 train_loss=1") and "eta 0s" in lines[-1]
