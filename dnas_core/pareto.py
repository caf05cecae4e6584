"""Pareto fronts of (cost, metric) points and the accuracy-vs-latency scatter.

Used by run reports, the latency benchmarks and multi-objective tuning: any list of
``(latency, metric)`` points (or another cost on the x axis) can be drawn with its
Pareto front marked.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence


def pareto_front(points: Sequence[tuple[float, float]], maximize: bool = True) -> list[int]:
    """Indices of the non-dominated points, sorted by cost. A point is dominated when
    another has no higher cost and a metric at least as good, one of both strictly."""
    sign = 1.0 if maximize else -1.0
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -sign * points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        m = sign * points[i][1]
        if m > best:
            front.append(i)
            best = m
    return front


def plot_pareto(points: Sequence[tuple[float, float]], path: str | Path | None = None, *, maximize: bool = True,
                xlabel: str = "latency (ms)", ylabel: str = "accuracy", title: str = "",
                labels: Sequence[str] | None = None, x_limit: float | None = None) -> bytes:
    """Scatter of ``points`` with the Pareto front drawn as a step line; ``x_limit``
    draws a vertical constraint line (e.g. ``max_latency_ms``). Returns the PNG bytes
    and writes them to ``path`` when given."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not points:
        raise ValueError("plot_pareto: no points to draw")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    front = pareto_front(points, maximize=maximize)
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    ax.scatter(xs, ys, s=18, alpha=0.6, color="tab:blue", label="architectures")
    fx, fy = [xs[i] for i in front], [ys[i] for i in front]
    ax.step(fx, fy, where="post", color="tab:red", linewidth=1.5)
    ax.scatter(fx, fy, s=30, color="tab:red", label="Pareto front", zorder=3)
    if labels is not None:
        for i in front:
            ax.annotate(str(labels[i]), (xs[i], ys[i]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    if x_limit is not None:
        ax.axvline(x_limit, color="gray", linestyle="--", label=f"limit {x_limit:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    return data
