"""The report of a run: ``report.md`` with its figures in ``plots/`` and a
self-contained ``report.html`` (the same figures embedded as base64 PNG).

The report is built once as a list of :class:`Section` objects made of a few block
kinds (paragraph, table, image, preformatted text, raw Markdown), then rendered to
Markdown and to HTML, so the two files always say the same thing. What it shows:

* the run facts and the searched architecture, drawn as a picture: a space may draw
  its genotype itself (``draw_genotype(genotype, ax)``), otherwise the picture is made
  from the space's :class:`~dnas_core.GraphEncoding` (cells as DAGs with operation
  labels, chains as layer diagrams);
* final test metrics with reference baselines beside them when known, ranking
  metrics (names with ``@``) apart, and the confusion matrix of classification tasks;
* the evolution of the architecture weights (one heatmap per edge) and learning curves;
* the collapse monitor's metric ``collapse/param_free_share`` when present;
* model size, measured latency, the export verification, wall time per stage;
* any Markdown sections other plugins put in ``run.state["report_sections"]``;
* the resolved manifest.

Figures are drawn with matplotlib's Agg backend. A figure that fails to draw is
replaced by a one-line note: a report never fails a finished run.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from .context import RunContext
from .progress import log
from .rundir import atomic_write_bytes

#: The collapse monitor's metric (share of architecture weight on parameter-free ops).
COLLAPSE_METRIC = "collapse/param_free_share"
#: Above this final share the report flags the search as collapsed.
COLLAPSE_THRESHOLD = 0.5


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _save(fig: Any, ctx: RunContext, name: str) -> str:
    rel = f"plots/{name}"
    atomic_write_bytes(ctx.run_dir.file(rel), _png(fig))
    return rel


# ---------------------------------------------------------------------------------
# Report model
# ---------------------------------------------------------------------------------


@dataclass
class Section:
    """One titled part of the report: a list of blocks ``(kind, payload)`` with kind
    ``p`` (text), ``table`` ((header, rows)), ``img`` (relative path), ``pre`` (text) or
    ``md`` (raw Markdown from a plugin)."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def p(self, text: str) -> Section:
        self.blocks.append(("p", text))
        return self

    def table(self, header: list[str], rows: list[list[Any]]) -> Section:
        self.blocks.append(("table", (header, rows)))
        return self

    def img(self, rel: str | None, alt: str = "") -> Section:
        if rel:
            self.blocks.append(("img", (rel, alt or rel)))
        return self

    def pre(self, text: str) -> Section:
        self.blocks.append(("pre", text))
        return self

    def md(self, text: str) -> Section:
        self.blocks.append(("md", text))
        return self


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e5 else f"{v:.4f}".rstrip("0").rstrip(".")
    return str(v)


def render_markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for kind, payload in s.blocks:
            if kind == "p":
                lines += [payload, ""]
            elif kind == "table":
                header, rows = payload
                lines.append("| " + " | ".join(header) + " |")
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(_fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]
                lines.append("")
            elif kind == "img":
                rel, alt = payload
                lines += [f"![{alt}]({rel})", ""]
            elif kind == "pre":
                lines += ["```", payload.rstrip("\n"), "```", ""]
            elif kind == "md":
                lines += [payload, ""]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}
h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}
td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block;margin:.6em 0}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
.md{white-space:pre-wrap}
nav a{margin-right:1em}
"""


def _md_to_html(text: str) -> str:
    """Markdown from plugins: rendered with python-markdown when installed, else shown
    as preformatted text (escaped either way: no raw HTML passes through)."""
    try:
        import markdown  # type: ignore[import-not-found]
    except ImportError:
        return f'<div class="md">{html.escape(text)}</div>'
    return markdown.markdown(html.escape(text, quote=False), extensions=["tables"])


def render_html(title: str, sections: list[Section], images: dict[str, bytes]) -> str:
    """A self-contained page: every image inlined as a ``data:`` URI, no scripts, no
    external resources."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{e(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>", "<nav>"]
    out += [f'<a href="#s{i}">{e(s.title)}</a>' for i, s in enumerate(sections)]
    out.append("</nav>")
    for i, s in enumerate(sections):
        out.append(f'<section id="s{i}"><h2>{e(s.title)}</h2>')
        for kind, payload in s.blocks:
            if kind == "p":
                out.append(f"<p>{e(payload)}</p>")
            elif kind == "table":
                header, rows = payload
                out.append("<table><thead><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr></thead><tbody>")
                for row in rows:
                    cells = "".join(
                        f'<td class="n">{e(_fmt(c))}</td>' if isinstance(c, (int, float)) and not isinstance(c, bool)
                        else f"<td>{e(_fmt(c))}</td>" for c in row
                    )
                    out.append(f"<tr>{cells}</tr>")
                out.append("</tbody></table>")
            elif kind == "img":
                rel, alt = payload
                data = images.get(rel)
                if data:
                    b64 = base64.b64encode(data).decode("ascii")
                    out.append(f'<img alt="{e(alt)}" src="data:image/png;base64,{b64}">')
            elif kind == "pre":
                out.append(f"<pre>{e(payload)}</pre>")
            elif kind == "md":
                out.append(_md_to_html(payload))
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------


def learning_curves_figure(records: list[dict[str, Any]]) -> Any | None:
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
        keys = [k for k in recs[-1] if "/" not in k and k not in ("stage", "epoch", "lr")
                and isinstance(recs[-1][k], (int, float))]
        for k in keys:
            if "loss" in k:
                ax.plot(epochs, [r.get(k) for r in recs], marker=".", label=k)
        ax2 = ax.twinx()
        for k in keys:
            if "loss" not in k and "skipped" not in k and "divergence" not in k:
                ax2.plot(epochs, [r.get(k) for r in recs], linestyle="--", marker=".", label=k)
        ax.set_title(stage)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax2.set_ylabel("metric")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        if h1 or h2:
            ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="center right")
    return fig


def learning_curves(ctx: RunContext, records: list[dict[str, Any]]) -> str | None:
    fig = learning_curves_figure(records)
    return _save(fig, ctx, "learning_curves.png") if fig is not None else None


def split_arch_key(key: str) -> tuple[str, str, str]:
    """``arch/<tensor>/<edge>/<op>`` -> ``(tensor, edge, op)`` (the tensor name may hold
    slashes; edge and op never do)."""
    parts = key[len("arch/"):].split("/")
    if len(parts) < 3:
        return ("arch", parts[0] if parts else key, parts[-1] if len(parts) > 1 else "")
    return ("/".join(parts[:-2]), parts[-2], parts[-1])


def arch_series(records: list[dict[str, Any]]) -> tuple[list[int], dict[str, dict[str, dict[str, list[float]]]]]:
    """Search epochs and ``{tensor: {edge: {op: [weight per epoch]}}}`` from the
    ``arch/...`` entries of metrics.jsonl (insertion order kept)."""
    recs = [r for r in records if r.get("stage") == "search" and any(k.startswith("arch/") for k in r)]
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for i, r in enumerate(recs):
        for k, v in r.items():
            if not k.startswith("arch/"):
                continue
            t, e, o = split_arch_key(k)
            series = out.setdefault(t, {}).setdefault(e, {}).setdefault(o, [math.nan] * len(recs))
            series[i] = float(v) if isinstance(v, (int, float)) else math.nan
    return [int(r.get("epoch", i)) + 1 for i, r in enumerate(recs)], out


def arch_evolution_figure(records: list[dict[str, Any]], max_edges: int = 48) -> Any | None:
    """One heatmap per edge (operations x search epochs), edges of every tensor."""
    import numpy as np

    epochs, series = arch_series(records)
    if not series:
        return None
    panels = [(t, e, ops) for t, edges in series.items() for e, ops in edges.items()][:max_edges]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    n_ops = max(len(ops) for _, _, ops in panels)
    plt = _plt()
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, (0.28 * n_ops + 1.1) * rows + 0.4),
                             squeeze=False, gridspec_kw={"wspace": 0.6, "hspace": 0.55})
    im = None
    # One colour scale for all panels, stretched over the values present: early in a
    # search the weights stay near uniform and a 0..1 scale would show flat panels.
    every = np.array([v for _, _, ops in panels for o in ops for v in ops[o]], dtype=float)
    lo, hi = (float(np.nanmin(every)), float(np.nanmax(every))) if np.isfinite(every).any() else (0.0, 1.0)
    if hi - lo < 1e-6:
        lo, hi = lo - 1e-3, hi + 1e-3
    for ax, (t, e, ops) in zip(axes.flat, panels):
        mat = np.array([ops[o] for o in ops], dtype=float)
        im = ax.imshow(mat, aspect="auto", cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_yticks(range(len(ops)))
        ax.set_yticklabels(list(ops), fontsize=7)
        step = max(1, len(epochs) // 10)
        ax.set_xticks(range(0, len(epochs), step))
        ax.set_xticklabels([str(x) for x in epochs[::step]], fontsize=7)
        ax.set_title(f"{t}: {e}" if len(series) > 1 else e, fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.supxlabel("search epoch", fontsize=9)
    fig.suptitle("architecture weights per edge (softmax over operations)", fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.02)
    return fig


def arch_evolution(ctx: RunContext, records: list[dict[str, Any]]) -> str | None:
    fig = arch_evolution_figure(records)
    return _save(fig, ctx, "arch_evolution.png") if fig is not None else None


def _layers(adjacency: Any) -> list[int]:
    """Longest-path layer of every node of a DAG given as an upper-triangular
    adjacency matrix (nodes in topological order)."""
    n = adjacency.shape[0]
    layer = [0] * n
    for j in range(n):
        preds = [i for i in range(n) if adjacency[i, j] > 0.5 and i != j]
        layer[j] = 1 + max((layer[i] for i in preds), default=-1)
    return layer


def is_chain(adjacency: Any) -> bool:
    n = adjacency.shape[0]
    for i in range(n):
        for j in range(n):
            if (adjacency[i, j] > 0.5) != (j == i + 1):
                return False
    return True


def architecture_figure(space: Any, genotype: Any) -> Any | None:
    """The searched architecture as a picture: the space's own ``draw_genotype(genotype,
    ax)`` when it has one, else drawn from its graph encoding (a chain as a layer
    diagram, anything else as a DAG with operation labels). ``None`` when the space can
    neither draw nor encode."""
    import numpy as np

    plt = _plt()
    draw = getattr(space, "draw_genotype", None)
    if callable(draw):
        fig, ax = plt.subplots(figsize=(8, 4))
        draw(genotype, ax)
        return fig
    try:
        graph = space.encode(genotype)
    except NotImplementedError:
        return None
    adj = np.asarray(graph.adjacency) > 0.5
    n = adj.shape[0]
    labels = []
    for i in range(n):
        row = np.asarray(graph.ops[i])
        labels.append(graph.op_names[int(row.argmax())] if row.size and row.max() > 0 else "?")
    if is_chain(adj):
        fig, ax = plt.subplots(figsize=(3.2, 0.55 * n + 0.6))
        for i, lab in enumerate(labels):
            y = n - 1 - i
            ax.text(0.5, y, f"{i}: {lab}", ha="center", va="center", fontsize=8,
                    bbox=dict(boxstyle="round,pad=0.35", fc="#dfeaf7", ec="#36c"))
            if i + 1 < n:
                ax.annotate("", xy=(0.5, y - 0.72), xytext=(0.5, y - 0.28),
                            arrowprops=dict(arrowstyle="->", color="#555"))
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.6, n - 0.4)
        ax.axis("off")
        ax.set_title(f"{space.name}: layer diagram", fontsize=9)
        return fig
    layer = _layers(adj)
    width = max(layer) + 1
    by_layer: dict[int, list[int]] = defaultdict(list)
    for i, l in enumerate(layer):
        by_layer[l].append(i)
    pos = {}
    for l, nodes in by_layer.items():
        for k, i in enumerate(nodes):
            pos[i] = (l, (k - (len(nodes) - 1) / 2) * 1.2)
    height = max(len(v) for v in by_layer.values())
    fig, ax = plt.subplots(figsize=(max(4.5, 1.9 * width), max(2.2, 0.9 * height + 1)))
    for i in range(n):
        for j in range(n):
            if adj[i, j] and i != j:
                ax.annotate("", xy=pos[j], xytext=pos[i],
                            arrowprops=dict(arrowstyle="->", color="#777", shrinkA=16, shrinkB=16,
                                            connectionstyle="arc3,rad=0.12"))
    for i, (x, y) in pos.items():
        lab = labels[i]
        muted = lab in ("none", "zero")
        ax.text(x, y, lab, ha="center", va="center", fontsize=8, color="#999" if muted else "#111",
                bbox=dict(boxstyle="round,pad=0.35", fc="#f3f3f3" if muted else "#dfeaf7", ec="#36c"))
    ax.set_xlim(-0.7, width - 0.3)
    ax.set_ylim(-0.8 * height - 0.3, 0.8 * height + 0.3)
    ax.axis("off")
    ax.set_title(f"{space.name}: cell DAG (operations on nodes)", fontsize=9)
    return fig


def confusion_figure(matrix: Any, classes: list[str]) -> Any:
    plt = _plt()
    k = len(classes)
    fig, ax = plt.subplots(figsize=(max(3.5, 0.45 * k + 2), max(3, 0.45 * k + 1.5)))
    im = ax.imshow(matrix, cmap="Blues", interpolation="nearest")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(classes, fontsize=7, rotation=45 if k > 6 else 0)
    ax.set_yticklabels(classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        top = matrix.max() if matrix.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=6,
                        color="white" if matrix[i, j] > top / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("confusion matrix (test split)", fontsize=9)
    fig.tight_layout()
    return fig


def collapse_figure(records: list[dict[str, Any]]) -> Any | None:
    recs = [r for r in records if r.get("stage") == "search" and COLLAPSE_METRIC in r]
    if not recs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.plot([r["epoch"] + 1 for r in recs], [r[COLLAPSE_METRIC] for r in recs], marker=".")
    ax.axhline(COLLAPSE_THRESHOLD, color="#c33", linestyle=":", label=f"flag at {COLLAPSE_THRESHOLD}")
    ax.set_ylim(0, 1)
    ax.set_xlabel("search epoch")
    ax.set_ylabel("param-free share")
    ax.legend(fontsize=7)
    return fig


# ---------------------------------------------------------------------------------
# Content
# ---------------------------------------------------------------------------------


def _classification_confusion(ctx: RunContext, network: Any) -> tuple[Any, list[str]] | None:
    """Confusion matrix of ``network`` on the test split, or ``None`` when the task is
    not single-label classification."""
    import numpy as np
    import torch
    from sklearn.metrics import confusion_matrix

    from .training import predict

    spec = ctx.task.io_spec()
    if spec.modality == "recsys" or not isinstance(ctx.task.loss_fn(), torch.nn.CrossEntropyLoss):
        return None  # ranking and regression tasks have no confusion matrix
    out, target = predict(network, ctx.data.test, ctx.device)
    if out.dim() != 2 or out.shape[1] < 2 or target.dim() != 1 or target.is_floating_point():
        return None
    k = out.shape[1]
    classes = [str(c) for c in spec.extra.get("classes", [])] or [str(i) for i in range(k)]
    if len(classes) != k:
        classes = [str(i) for i in range(k)]
    m = confusion_matrix(target.numpy(), out.argmax(1).numpy(), labels=list(range(k)))
    return np.asarray(m), classes


def reference_metrics(ctx: RunContext) -> dict[str, float]:
    """Known reference results for this task's primary metric: the task's class
    attribute ``REFERENCE`` (``{name: value}``) and anything plugins put in
    ``run.state["reference_metrics"]``."""
    refs: dict[str, float] = {}
    for src in (getattr(ctx.task, "REFERENCE", None), ctx.state.get("reference_metrics")):
        if isinstance(src, dict):
            refs.update({str(k): float(v) for k, v in src.items() if isinstance(v, (int, float))})
    return refs


def collapse_status(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The final value of the collapse monitor's metric and whether it is above the
    report's flag (``None`` when no monitor logged it)."""
    vals = [r[COLLAPSE_METRIC] for r in records if r.get("stage") == "search" and COLLAPSE_METRIC in r]
    if not vals:
        return None
    return {"final": float(vals[-1]), "max": float(max(vals)), "collapsed": float(vals[-1]) > COLLAPSE_THRESHOLD,
            "threshold": COLLAPSE_THRESHOLD}


def _figure(sec: Section, images: dict[str, bytes], name: str, alt: str, make) -> None:
    try:
        fig = make()
    except Exception as exc:  # noqa: BLE001 - a figure never fails the report
        sec.p(f"({alt}: not drawn: {type(exc).__name__}: {exc})")
        log(f"warning: report figure {name} not drawn: {type(exc).__name__}: {exc}")
        return
    if fig is None:
        return
    rel = f"plots/{name}"
    images[rel] = _png(fig)
    sec.img(rel, alt)


def build_sections(ctx: RunContext, result: dict[str, Any], network: Any = None) -> tuple[list[Section], dict[str, bytes]]:
    """The report as sections plus the PNG bytes of every figure (by relative path)."""
    from .genotype import Genotype

    records = ctx.run_dir.metrics()
    images: dict[str, bytes] = {}
    sections: list[Section] = []
    rd = ctx.run_dir
    geno = result["genotype"]

    s = Section("Run")
    s.table(["item", "value"], [
        ["task", result["task"]], ["search space", result["space"]], ["strategy", result["strategy"]],
        ["seed", result["seed"]], ["backend", f"{ctx.backend.name} on {ctx.device}"],
        ["architecture", geno.get("text") or str(geno.get("spec"))], ["architecture hash", geno.get("hash")],
    ])
    sections.append(s)

    s = Section("Searched architecture")
    _figure(s, images, "architecture.png", "searched architecture",
            lambda: architecture_figure(ctx.space, Genotype.from_json(geno)))
    if not s.blocks:
        s.p("This search space neither draws genotypes nor provides a graph encoding.")
    s.pre(ctx.space.format(Genotype.from_json(geno)))
    sections.append(s)

    test = {k: v for k, v in result.get("test_metrics", {}).items() if isinstance(v, (int, float))}
    s = Section("Test metrics")
    if result.get("untrained"):
        s.p("**Not a result:** `train.epochs` is 0, so these are the test metrics of the derived network at its "
            "initial weights. This run's result is the searched architecture above.")
    plain = {k: v for k, v in test.items() if "@" not in k and k != "users"}  # users: a count, not a metric
    ranking = {k: v for k, v in test.items() if "@" in k}
    primary = result.get("primary_metric")
    s.table(["metric", "value"], [[k + (" (primary)" if k == primary else ""), v] for k, v in plain.items()])
    if ranking:
        s.p("Ranking metrics:")
        s.table(["metric", "value"], [[k + (" (primary)" if k == primary else ""), v] for k, v in ranking.items()])
    refs = reference_metrics(ctx)
    if refs and primary in test:
        s.p(f"Reference results for {primary} on this task, beside this run:")
        rows = [[f"this run ({result['strategy']})", test[primary]]] + [[k, v] for k, v in refs.items()]
        s.table(["model", primary], sorted(rows, key=lambda r: -r[1] if ctx.task.metric_direction == "maximize" else r[1]))
    if network is not None:
        def confusion():
            cm = _classification_confusion(ctx, network)
            return None if cm is None else confusion_figure(*cm)
        _figure(s, images, "confusion_matrix.png", "confusion matrix", confusion)
    sections.append(s)

    s = Section("Architecture weights during search")
    _figure(s, images, "arch_evolution.png", "architecture weight evolution", lambda: arch_evolution_figure(records))
    coll = collapse_status(records)
    if coll is not None:
        verdict = (f"COLLAPSED: the parameter-free share ended above {coll['threshold']}"
                   if coll["collapsed"] else "no collapse")
        s.p(f"Collapse monitor ({COLLAPSE_METRIC}): final {coll['final']:.3f}, max {coll['max']:.3f} -> {verdict}.")
        _figure(s, images, "collapse.png", "parameter-free share during search", lambda: collapse_figure(records))
    if s.blocks:
        sections.append(s)

    s = Section("Learning curves")
    _figure(s, images, "learning_curves.png", "learning curves", lambda: learning_curves_figure(records))
    skipped = {st: sum(r.get("skipped_steps", 0) for r in records if r.get("stage") == st) for st in ("search", "retrain")}
    if any(skipped.values()):
        s.p("Divergence guard: steps skipped on a non-finite loss or gradient: "
            + ", ".join(f"{k} {v}" for k, v in skipped.items() if v) + ".")
    if s.blocks:
        sections.append(s)

    s = Section("Model")
    rows: list[list[Any]] = [["trainable parameters", result.get("params")]]
    for f in ("model.pt", "model.onnx"):
        if rd.exists(f):
            rows.append([f"{f} size (bytes)", rd.file(f).stat().st_size])
    if result.get("latency_ms") is not None:
        rows.append([f"latency, batch 1, {ctx.backend.name} (median ms)", float(result["latency_ms"])])
    cons = result.get("constraints") or {}
    if cons.get("error"):
        rows.append(["constraints", f"not checked: {cons['error']}"])
    for name, limit in (cons.get("limits") or {}).items():
        verdict = "EXCEEDED" if name in cons.get("exceeded", []) else "met"
        rows.append([f"constraint {name} <= {limit:g} (predicted / counted)", f"{cons['values'][name]:g}: {verdict}"])
    s.table(["item", "value"], rows)
    export = result.get("export") or {}
    if export:
        ok = export.get("ok")
        s.p(f"Export: {export.get('file')} ({export.get('exporter')}): max abs difference against torch "
            f"{export.get('max_abs_diff', float('nan')):.3e} on {export.get('checked_inputs')} test inputs -> "
            f"{'verified' if ok else 'MISMATCH'}.")
    sections.append(s)

    s = Section("Wall time per stage")
    st = result.get("stage_seconds", {})
    # written while the report stage runs: its own time (and so result.json's wall_seconds) is not known yet
    s.table(["stage", "seconds"],
            [[k, float(v)] for k, v in st.items()] + [["sum of the stages above", float(sum(st.values()))]])
    s.p("The report stage itself is not included; `wall_seconds` in result.json is the whole run.")
    sections.append(s)

    extra = [x for x in ctx.state.get("report_sections", []) if isinstance(x, str)]
    loose = Section("From plugins")
    for text in extra:
        head, _, body = text.strip().partition("\n")
        if head.startswith("## "):  # a plugin's own section: its heading, not an empty wrapper above it
            sections.append(Section(head[3:].strip()).md(body.strip()))
        else:
            loose.md(text)
    if loose.blocks:
        sections.append(loose)

    if result.get("plugin_errors"):
        sections.append(Section("Plugin errors").table(["error"], [[e] for e in result["plugin_errors"]]))

    if rd.exists("manifest.yaml"):
        sections.append(Section("Manifest").pre(rd.file("manifest.yaml").read_text(encoding="utf-8")))
    return sections, images


def write_report(ctx: RunContext, result: dict[str, Any], network: Any = None) -> dict[str, Any]:
    """Write ``plots/*.png``, ``report.md`` and ``report.html``; returns the plot paths."""
    sections, images = build_sections(ctx, result, network)
    for rel, data in images.items():
        atomic_write_bytes(ctx.run_dir.file(rel), data)
    title = f"dnas run {result['name']}"
    ctx.run_dir.write_text("report.md", render_markdown(title, sections))
    ctx.run_dir.write_text("report.html", render_html(title, sections, images))
    return {"plots": sorted(images), "report": ["report.md", "report.html"]}
