"""Looking at run directories: ``dnas show RUN_DIR`` and ``dnas compare RUN_A RUN_B ...``.

Both read only what a run wrote (``manifest.yaml``, ``status.json``, ``state.json``,
``result.json``, ``metrics.jsonl``); they work on finished, failed and interrupted
runs alike and never import a plugin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UsageError
from .manifest import read_yaml
from .report import collapse_status
from .rundir import RunDir


def load_run(path: str | Path) -> dict[str, Any]:
    """Everything ``show`` and ``compare`` need about one run directory."""
    rd = RunDir.open(path)
    manifest = read_yaml(rd.file("manifest.yaml"))
    result = rd.read_json("result.json") if rd.exists("result.json") else {}
    state = rd.read_json("state.json") if rd.exists("state.json") else {}
    genotype = rd.read_json("genotype.json") if rd.exists("genotype.json") else result.get("genotype") or {}
    records = rd.metrics()
    last: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("stage"):
            last[r["stage"]] = r

    def section_type(key: str) -> str:
        v = manifest.get(key)
        return str(v.get("type")) if isinstance(v, dict) else "-"

    return {
        "path": str(rd.path),
        "name": str(manifest.get("name", rd.path.name)),
        "status": rd.status(),
        "task": section_type("task"),
        "space": section_type("space"),
        "strategy": section_type("strategy"),
        "seed": manifest.get("seed", 0),
        "result": result,
        "completed_stages": state.get("completed", []),
        "stage_seconds": result.get("stage_seconds") or state.get("seconds", {}),
        "genotype": genotype,
        "records": records,
        "last": last,
        "collapse": collapse_status(records),
        "reports": [f for f in ("report.html", "report.md") if rd.exists(f)],
    }


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def show(path: str | Path) -> str:
    """A terminal summary of one run."""
    run = load_run(path)
    st = run["status"]
    res = run["result"]
    lines = [f"run {run['name']}  ({run['path']})",
             f"  status      {st.get('status', 'unknown')}" + (f": {st['error']}" if st.get("error") else ""),
             f"  task        {run['task']}   space {run['space']}   strategy {run['strategy']}   seed {run['seed']}"]
    g = run["genotype"]
    if g:
        lines.append(f"  genotype    {g.get('text') or g.get('spec')}  (hash {g.get('hash', '-')})")
    if res:
        lines.append("  test        " + "  ".join(f"{k}={_num(v)}" for k, v in res.get("test_metrics", {}).items()))
        lines.append(f"  params      {_num(res.get('params'))}   latency {_num(res.get('latency_ms'))} ms")
        exp = res.get("export") or {}
        if exp:
            lines.append(f"  export      {exp.get('file')}: max abs diff {exp.get('max_abs_diff', float('nan')):.2e} "
                         f"-> {'verified' if exp.get('ok') else 'MISMATCH'}")
    for stage, rec in run["last"].items():
        vals = "  ".join(f"{k}={_num(v)}" for k, v in rec.items()
                         if k not in ("stage", "epoch") and "/" not in k and isinstance(v, (int, float)))
        lines.append(f"  {stage:<11} last epoch {rec.get('epoch', 0) + 1}: {vals}")
    c = run["collapse"]
    if c is not None:
        lines.append(f"  collapse    param-free share {c['final']:.3f}" + ("  COLLAPSED" if c["collapsed"] else ""))
    if run["stage_seconds"]:
        lines.append("  seconds     " + "  ".join(f"{k}={v:.1f}" for k, v in run["stage_seconds"].items()))
    if not res:
        done = ", ".join(run["completed_stages"]) or "none"
        status = st.get("status")
        hint = {"pruned": "  (pruned by its study: the tuner stopped it on purpose)",
                "completed": ""}.get(status, "  (resume with `dnas run --resume DIR`)")
        lines.append(f"  stages done {done}{hint}")
    if res.get("plugin_errors"):
        lines += [f"  plugin error {e}" for e in res["plugin_errors"]]
    if run["reports"]:
        lines.append("  report      " + "  ".join(str(Path(run["path"]) / f) for f in run["reports"]))
    return "\n".join(lines)


def _curve_keys(runs: list[dict[str, Any]]) -> list[str]:
    """Metrics worth overlaying: the validation metrics and train_loss every run has."""
    common = None
    for run in runs:
        keys = {k for r in run["records"] for k, v in r.items()
                if isinstance(v, (int, float)) and "/" not in k and k not in ("epoch", "lr")}
        common = keys if common is None else common & keys
    common = common or set()
    ordered = sorted(k for k in common if k.startswith("val_")) + [k for k in ("train_loss",) if k in common]
    return ordered[:4]


def compare(paths: list[str | Path], png: str | Path | None = None) -> tuple[str, dict[str, Any]]:
    """A side-by-side table of several runs and, if ``png`` is given, their learning
    curves overlaid (one panel per shared metric, search and retrain side by side)."""
    if len(paths) < 2:
        raise UsageError("compare: give at least two run directories")
    runs = [load_run(p) for p in paths]
    names = [r["name"] for r in runs]
    for r in runs:
        if names.count(r["name"]) > 1:
            r["name"] = f"{r['name']} ({Path(r['path']).name})"
    metrics = []
    for run in runs:
        for k in run["result"].get("test_metrics", {}):
            if k not in metrics:
                metrics.append(k)
    header = ["", *[r["name"] for r in runs]]
    rows = [
        ["path", *[r["path"] for r in runs]],
        ["status", *[r["status"].get("status", "unknown") for r in runs]],
        ["task", *[r["task"] for r in runs]],
        ["space", *[r["space"] for r in runs]],
        ["strategy", *[r["strategy"] for r in runs]],
        ["seed", *[str(r["seed"]) for r in runs]],
        ["genotype", *[str(r["genotype"].get("text") or r["genotype"].get("spec") or "-") for r in runs]],
        *[[f"test {m}", *[_num(r["result"].get("test_metrics", {}).get(m)) for r in runs]] for m in metrics],
        ["params", *[_num(r["result"].get("params")) for r in runs]],
        ["latency ms", *[_num(r["result"].get("latency_ms")) for r in runs]],
        ["wall s", *[_num(round(sum(r["stage_seconds"].values()), 1)) if r["stage_seconds"] else "-" for r in runs]],
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    widths = [min(w, 60) for w in widths]
    text = "\n".join("  ".join(str(c)[:60].ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *rows])
    out = {"runs": [{"path": r["path"], "name": r["name"], "status": r["status"].get("status"),
                     "genotype": r["genotype"], "test_metrics": r["result"].get("test_metrics", {})} for r in runs]}
    if png is not None:
        keys = _curve_keys(runs)
        if keys:
            _overlay(runs, keys, Path(png))
            out["plot"] = str(png)
            text += f"\n\ncurves: {png}"
    return text, out


def _overlay(runs: list[dict[str, Any]], keys: list[str], png: Path) -> None:
    from .report import _plt, _png
    from .rundir import atomic_write_bytes

    plt = _plt()
    stages = [s for s in ("search", "retrain") if any(r.get("stage") == s for run in runs for r in run["records"])]
    fig, axes = plt.subplots(len(keys), len(stages), figsize=(5.2 * len(stages), 2.8 * len(keys)), squeeze=False)
    for i, key in enumerate(keys):
        for j, stage in enumerate(stages):
            ax = axes[i][j]
            for run in runs:
                recs = [r for r in run["records"] if r.get("stage") == stage and key in r]
                if recs:
                    ax.plot([r["epoch"] + 1 for r in recs], [r[key] for r in recs], marker=".", label=run["name"])
            ax.set_title(f"{stage}: {key}", fontsize=9)
            ax.set_xlabel("epoch")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    try:
        atomic_write_bytes(png.resolve(), _png(fig))
    except Exception as exc:  # atomic_write_bytes raises RunFailed for OSError
        raise UsageError(f"compare: cannot write the plot {png}: {exc}") from None


__all__ = ["load_run", "show", "compare"]
