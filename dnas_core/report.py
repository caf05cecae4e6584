"""Plots and the Markdown report of a run.

Figures are drawn with matplotlib's Agg backend into ``plots/``: learning curves of
every stage and, for differentiable searches, the evolution of the architecture
distribution (one heatmap row per edge and operation over epochs).
"""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

from .context import RunContext
from .rundir import atomic_write_bytes


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, ctx: RunContext, name: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    rel = f"plots/{name}"
    atomic_write_bytes(ctx.run_dir.file(rel), buf.getvalue())
    return rel


def learning_curves(ctx: RunContext, records: list[dict[str, Any]]) -> str | None:
    by_stage: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("stage") in ("search", "retrain"):
            by_stage[r["stage"]].append(r)
    if not by_stage:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(by_stage), figsize=(5.5 * len(by_stage), 3.6), squeeze=False)
    for ax, (stage, recs) in zip(axes[0], sorted(by_stage.items(), key=lambda kv: kv[0] != "search"), strict=True):
        epochs = [r["epoch"] + 1 for r in recs]
        keys = [k for k in recs[-1] if not k.startswith("arch/") and k not in ("stage", "epoch", "lr")
                and isinstance(recs[-1][k], (int, float))]
        for k in keys:
            if "loss" in k:
                ax.plot(epochs, [r.get(k) for r in recs], label=k)
        ax2 = ax.twinx()
        for k in keys:
            if "loss" not in k and "skipped" not in k:
                ax2.plot(epochs, [r.get(k) for r in recs], linestyle="--", label=k)
        ax.set_title(f"{stage}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax2.set_ylabel("metric")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="center right")
    return _save(fig, ctx, "learning_curves.png")


def arch_evolution(ctx: RunContext, records: list[dict[str, Any]]) -> str | None:
    recs = [r for r in records if r.get("stage") == "search" and any(k.startswith("arch/") for k in r)]
    if not recs:
        return None
    keys = sorted({k for r in recs for k in r if k.startswith("arch/")}, key=lambda k: list(recs[-1]).index(k) if k in recs[-1] else 0)
    import numpy as np

    mat = np.array([[r.get(k, np.nan) for r in recs] for k in keys])
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(recs) + 3), max(3, 0.22 * len(keys) + 1)))
    im = ax.imshow(mat, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels([k[5:] for k in keys], fontsize=6)
    ax.set_xticks(range(len(recs)))
    ax.set_xticklabels([str(r["epoch"] + 1) for r in recs], fontsize=7)
    ax.set_xlabel("search epoch")
    ax.set_title("architecture weights (softmax) per edge/op")
    fig.colorbar(im, ax=ax, fraction=0.03)
    return _save(fig, ctx, "arch_evolution.png")


def write_report(ctx: RunContext, result: dict[str, Any]) -> dict[str, Any]:
    records = ctx.run_dir.metrics()
    plots = [p for p in (learning_curves(ctx, records), arch_evolution(ctx, records)) if p]
    test = result.get("test_metrics", {})
    export = result.get("export", {})
    lines = [
        f"# dnas run `{result['name']}`",
        "",
        f"- task: **{result['task']}**, space: **{result['space']}**, strategy: **{result['strategy']}**, seed {result['seed']}",
        f"- architecture: `{result['genotype']['text'] or result['genotype']['spec']}` (hash `{result['genotype']['hash']}`)",
        f"- parameters: {result.get('params')}",
        "",
        "## Test metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in test.items() if isinstance(v, (int, float))],
        "",
    ]
    if result.get("latency_ms") is not None:
        lines += [f"Latency (batch 1, {ctx.backend.name}): {result['latency_ms']:.3f} ms", ""]
    for section in ctx.state.get("report_sections", []):
        lines += [section, ""]
    if export:
        lines += [
            "## Export",
            "",
            f"`{export.get('file')}` ({export.get('exporter')}): max abs difference against torch "
            f"{export.get('max_abs_diff', float('nan')):.3e} on {export.get('checked_inputs')} test inputs "
            f"-> {'verified' if export.get('ok') else 'MISMATCH'}",
            "",
        ]
    lines += ["## Wall time per stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in result.get("stage_seconds", {}).items()]
    lines += [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    ctx.run_dir.write_text("report.md", "\n".join(lines))
    return {"plots": plots}
