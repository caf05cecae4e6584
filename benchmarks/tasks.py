"""Searched architecture vs hand-designed baseline, per task, under one parameter budget.

For every task with an example manifest ``examples/task_<name>.yaml`` (one per task
with data on these machines, across the five domains: vision ``fashion_mnist``,
``digits``; text ``sst2``, ``sms_spam``; audio / signals ``fsdd``, ``mnist1d``; medical
``pneumoniamnist``, ``breast_cancer``; recommendation ``movielens``; the tasks that read
a user's own files have no row):

1. run the manifest (search -> derive -> retrain -> evaluate) with the budget below;
2. train the hand-designed baseline with the same task section, the same ``train:``
   section and the same seed(s), through the ``fixed`` strategy. The baseline is
   ``examples/baseline_<name>.yaml`` (its ``space`` / ``strategy`` sections) when that
   file exists, else the task manifest's space with ``strategy: fixed`` when the space
   offers a ``baseline()``, else a per-modality default (image: ``small_cnn``, recsys:
   ``neumf``, sequence: ``seq_cnn``, tabular: ``tabular_mlp``);
3. size the baseline to the searched network's parameter count where the baseline has
   a width knob (``small_cnn.C``, ``neumf.factors``, the tabular MLP's width/depth): the
   setting whose parameter count is closest is used, so both sides get the same budget
   (``seq_cnn.C`` and ``seq_bigru.hidden`` for sequences);
4. print test metric (median over seeds), parameters, search seconds and retrain
   seconds of each side, and the ratio of retrain times measured side by side;
5. compare the sides seed by seed: wins / ties / losses of the searched network and
   the mean difference with twice its standard error, so that a gap can be read
   against the seed-to-seed noise (``paired`` in each JSON row).

Budget: the example manifests' settings (their data limits included), with search and
retrain epochs capped (``--max-search-epochs``, ``--max-train-epochs``; defaults 3 and 5)
and, when ``--limit-train N`` is given, at most N training examples for tasks that take
``limit_train``. The epoch caps make these smaller budgets than the example manifests:
the figures are a like-for-like comparison, not the best each model can reach. Every
run uses one torch thread (on these shared machines two threads were several times
slower under load). Export and report stages are skipped: nothing here reads them.

    python benchmarks/tasks.py            # full run
    python benchmarks/tasks.py --quick    # smoke run (< 1 minute: 1 epoch, small slices)
    python benchmarks/tasks.py --only movielens breast_cancer --seeds 0 1 2
    # in parts (e.g. two processes), then one JSON and one table of all rows:
    python benchmarks/tasks.py --only sst2 fsdd --out /tmp/a.json
    python benchmarks/tasks.py --merge /tmp/a.json /tmp/b.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DNAS_PROGRESS", "0")

import yaml  # noqa: E402

from dnas_core import IncompatibleError, get_plugin_manager  # noqa: E402
from dnas_core.orchestrator import Orchestrator  # noqa: E402
from dnas_core.training import count_parameters  # noqa: E402

EXAMPLES = ROOT / "examples"
RESULTS = ROOT / "benchmarks" / "results"

#: Baseline space per modality when neither a baseline manifest nor space.baseline() exists.
MODALITY_BASELINES = {
    "image": {"type": "small_cnn"},
    "recsys": {"type": "neumf"},
    "sequence": {"type": "seq_cnn"},
    "tabular": {"type": "tabular_mlp"},
}

#: Published reference points printed beside our numbers: (metric, value, source).
REFERENCES = {
    "movielens": ("hr@10", 0.67, "NeuMF on ML-100K, leave-one-out vs 99 negatives: the figure the project issue "
                  "quotes, not a paper's (He et al. 2017, the NCF paper, report ML-1M and Pinterest only: "
                  "NeuMF HR@10 0.730 on ML-1M with pre-training)"),
    "mnist1d": ("accuracy", 0.94, "CNN, Greydanus 2020 (logistic 0.32, MLP 0.68, GRU 0.91)"),
}

#: Task-config fields shrunk in --quick mode, when the task has them.
QUICK_LIMITS = {"limit_train": 200, "limit_test": 100, "limit_val": 60, "limit_users": 60}


def width_knobs(space: dict[str, Any]) -> list[dict[str, Any]]:
    """Settings of a baseline space that change its size, smallest first."""
    kind = space["type"]
    if kind == "small_cnn":
        return [{"C": c} for c in range(4, 65, 2)]
    if kind == "neumf":
        out = []
        for f in (4, 8, 12, 16, 24, 32, 48, 64):
            for top in (32, 64, 128, 256):  # the paper's tower shape: halving, 4 layers
                out.append({"factors": f, "mlp_layers": [top, top // 2, top // 4, top // 8]})
        return out
    if kind == "seq_cnn":
        return [{"C": c} for c in range(8, 97, 4)]
    if kind == "seq_bigru":
        return [{"hidden": h} for h in range(8, 129, 8)]
    if kind == "tabular_mlp":
        widths = space.get("widths", [64, 128, 256])
        depth = space.get("max_depth", 3)
        return [{"baseline_width": w, "baseline_depth": d} for w in widths for d in range(1, depth + 1)]
    return []


def run_stages(pm, manifest: dict[str, Any], out: Path) -> Orchestrator:
    out.mkdir(parents=True, exist_ok=True)
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(manifest))
    orch = Orchestrator.new(path, out=out, pm=pm)
    orch._start()
    for name in ("search", "derive", "retrain", "evaluate"):
        orch._stage(name, getattr(orch, name))
    return orch


def summarize(orch: Orchestrator) -> dict[str, Any]:
    task = orch.ctx.task
    test = orch.run_dir.read_json("test_metrics.json")["test"]
    sec = orch.state["seconds"]
    return {"metric": test[task.primary_metric], "test": test, "params": orch.ctx.state["params"],
            "genotype": orch.ctx.space.format(orch.ctx.state["genotype"]),
            "search_s": sec.get("search", 0.0), "retrain_s": sec.get("retrain", 0.0)}


def budgeted(manifest: dict[str, Any], args, pm) -> dict[str, Any]:
    m = copy.deepcopy(manifest)
    m.pop("export", None)
    m["backend"] = {"type": "cpu", "threads": 1}
    m.setdefault("train", {})
    strategy = m["strategy"]
    if args.quick:
        if "epochs" in pm.registries.strategies.get(strategy["type"]).Config.model_fields:
            strategy["epochs"] = 1
        m["train"]["epochs"] = 1
        fields = pm.registries.tasks.get(m["task"]["type"]).Config.model_fields
        for key, value in QUICK_LIMITS.items():
            if key in fields:
                m["task"][key] = min(m["task"].get(key) or value, value)
    else:
        if "epochs" in strategy:
            strategy["epochs"] = min(strategy["epochs"], args.max_search_epochs)
        m["train"]["epochs"] = min(m["train"].get("epochs", 30), args.max_train_epochs)
        fields = pm.registries.tasks.get(m["task"]["type"]).Config.model_fields
        if args.limit_train and "limit_train" in fields:
            m["task"]["limit_train"] = min(m["task"].get("limit_train") or args.limit_train, args.limit_train)
    return m


def baseline_manifest(name: str, searched: dict[str, Any], pm) -> tuple[dict[str, Any], str]:
    """The baseline manifest for ``searched`` and where its architecture came from."""
    base = copy.deepcopy(searched)
    path = EXAMPLES / f"baseline_{name}.yaml"
    if path.is_file():
        b = yaml.safe_load(path.read_text())
        base["space"], base["strategy"] = b["space"], b.get("strategy", {"type": "fixed"})
        return base, path.name
    reg = pm.registries
    task = reg.tasks.create(searched["task"]["type"], {k: v for k, v in searched["task"].items() if k != "type"})
    space = reg.spaces.create(searched["space"]["type"], {k: v for k, v in searched["space"].items() if k != "type"})
    base["strategy"] = {"type": "fixed"}
    try:
        task.data(searched.get("seed", 0))
        space.baseline(task)
        return base, f"{space.name}.baseline()"
    except IncompatibleError:
        modality = task.io_spec().modality
        if modality not in MODALITY_BASELINES:
            raise
        base["space"] = dict(MODALITY_BASELINES[modality])
        return base, f"default for modality {modality}"


def match_budget(base: dict[str, Any], target_params: int, pm) -> tuple[dict[str, Any], int | None]:
    """``base`` with the width setting whose parameter count is closest to ``target_params``."""
    knobs = width_knobs(base["space"])
    if not knobs:
        return base, None
    reg = pm.registries
    task = reg.tasks.create(base["task"]["type"], {k: v for k, v in base["task"].items() if k != "type"})
    task.data(base.get("seed", 0))
    best = None
    for knob in knobs:
        cfg = {**{k: v for k, v in base["space"].items() if k != "type"}, **knob}
        try:
            space = reg.spaces.create(base["space"]["type"], cfg)
            n = count_parameters(space.build_network(space.baseline(task), task))
        except (IncompatibleError, ValueError):
            continue
        if best is None or abs(n - target_params) < abs(best[1] - target_params):
            best = (knob, n)
    if best is None:
        return base, None
    out = copy.deepcopy(base)
    out["space"].update(best[0])
    return out, best[1]


def bench_task(name: str, path: Path, args, pm, tmp: Path) -> dict[str, Any]:
    manifest = budgeted(yaml.safe_load(path.read_text()), args, pm)
    base_m, source = baseline_manifest(name, manifest, pm)
    searched_runs, baseline_runs = [], []
    for seed in args.seeds:
        m = {**manifest, "seed": seed, "name": f"{name}-searched-s{seed}"}
        s = summarize(run_stages(pm, m, tmp / f"{name}-searched-s{seed}"))
        searched_runs.append(s)
        b = {**base_m, "seed": seed, "name": f"{name}-baseline-s{seed}"}
        if not args.no_match:
            b, _ = match_budget(b, s["params"], pm)
        baseline_runs.append({**summarize(run_stages(pm, b, tmp / f"{name}-baseline-s{seed}")), "space": b["space"]})
        print(f"  {name} seed {seed}: searched {s['metric']:.4f} ({s['params']:,} params) | "
              f"baseline {baseline_runs[-1]['metric']:.4f} ({baseline_runs[-1]['params']:,} params)", flush=True)
    med = lambda runs, k: statistics.median(r[k] for r in runs)  # noqa: E731
    task = pm.registries.tasks.create(manifest["task"]["type"], {k: v for k, v in manifest["task"].items() if k != "type"})
    ref = REFERENCES.get(manifest["task"]["type"])
    row = {
        "task": manifest["task"]["type"], "manifest": path.name, "metric_name": task.primary_metric,
        "seeds": list(args.seeds),
        "searched": {"space": manifest["space"]["type"], "strategy": manifest["strategy"]["type"],
                     "metric": med(searched_runs, "metric"), "params": med(searched_runs, "params"),
                     "search_s": med(searched_runs, "search_s"), "retrain_s": med(searched_runs, "retrain_s"),
                     "genotypes": [r["genotype"] for r in searched_runs], "runs": searched_runs},
        "baseline": {"space": base_m["space"]["type"], "source": source, "metric": med(baseline_runs, "metric"),
                     "params": med(baseline_runs, "params"), "retrain_s": med(baseline_runs, "retrain_s"),
                     "architecture": baseline_runs[0]["genotype"], "runs": baseline_runs},
        "delta": med(searched_runs, "metric") - med(baseline_runs, "metric"),
        "retrain_time_ratio": statistics.median(s["retrain_s"] / max(b["retrain_s"], 1e-9)
                                                for s, b in zip(searched_runs, baseline_runs, strict=True)),
        "reference": {"metric": ref[0], "value": ref[1], "source": ref[2]} if ref else None,
        "budget": {"strategy_epochs": manifest["strategy"].get("epochs"), "train_epochs": manifest["train"]["epochs"]},
    }
    row["paired"] = paired(row)
    return row


def paired(row: dict[str, Any]) -> dict[str, Any]:
    """Seed-by-seed comparison of a row (both sides ran each seed): wins / ties / losses
    of the searched network, and the mean difference with its standard error, so a
    median gap can be read against the seed-to-seed noise."""
    deltas = [s["metric"] - b["metric"]
              for s, b in zip(row["searched"]["runs"], row["baseline"]["runs"], strict=True)]
    eps = 1e-9  # equal test metrics (same number of test examples right) are a tie
    se = statistics.stdev(deltas) / len(deltas) ** 0.5 if len(deltas) > 1 else None  # one seed: no spread
    mean = statistics.fmean(deltas)
    return {"wins": sum(d > eps for d in deltas), "ties": sum(abs(d) <= eps for d in deltas),
            "losses": sum(d < -eps for d in deltas), "mean_delta": mean, "se_delta": se,
            "within_noise": se is not None and abs(mean) <= 2 * se}


def print_table(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        r["paired"] = paired(r)
    head = (f"{'task':<16} {'metric':<9} {'searched':>9} {'baseline':>9} {'delta':>8} {'W-T-L':>6} "
            f"{'mean d +- 2SE':>17} {'params S':>10} {'params B':>10} "
            f"{'search s':>9} {'train s S':>10} {'train s B':>10} {'S/B time':>8}  baseline")
    print(head)
    print("-" * len(head))
    for r in rows:
        s, b = r["searched"], r["baseline"]
        pr = r["paired"]
        wtl = f"{pr['wins']}-{pr['ties']}-{pr['losses']}"
        noise = f"{pr['mean_delta']:+.4f}" + (f" +- {2 * pr['se_delta']:.4f}" if pr["se_delta"] is not None else "")
        print(f"{r['task']:<16} {r['metric_name']:<9} {s['metric']:>9.4f} {b['metric']:>9.4f} {r['delta']:>+8.4f} "
              f"{wtl:>6} {noise:>17} {int(s['params']):>10,} {int(b['params']):>10,} {s['search_s']:>9.1f} {s['retrain_s']:>10.1f} "
              f"{b['retrain_s']:>10.1f} {r['retrain_time_ratio']:>8.2f}  {b['space']} ({b['source']})")
    print()
    for r in rows:
        print(f"{r['task']}: searched {r['searched']['space']} {r['searched']['genotypes'][0]}")
        print(f"{'':>{len(r['task'])}}  baseline {r['baseline']['architecture']}")
        if r["reference"]:
            ref = r["reference"]
            print(f"{'':>{len(r['task'])}}  published {ref['metric']} {ref['value']:.2f}: {ref['source']}")
    wins = sum(r["delta"] > 0 for r in rows)
    seeds = {tuple(r["seeds"]) for r in rows}
    if len(seeds) <= 1:
        where = f"median over seeds {rows[0]['seeds'] if rows else []}"
    else:
        where = "median over each row's seeds: " + ", ".join(f"{r['task']} {r['seeds']}" for r in rows)
    print(f"\nsearched beats baseline on {wins} of {len(rows)} tasks ({where})")
    print("W-T-L: seeds on which the searched network wins, ties, loses; mean d +- 2SE: mean difference "
          "(searched - baseline) over seeds and twice its standard error")
    if any(r["paired"]["se_delta"] is None for r in rows):
        print("rows run on one seed have no standard error: run several seeds to compare gaps with the noise")
    noisy = [r["task"] for r in rows if r["paired"]["within_noise"]]
    if any(r["paired"]["se_delta"] is not None for r in rows):
        print(f"mean difference within 2 SE of zero (not told apart from the baseline by these seeds): "
              f"{', '.join(noisy) if noisy else 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: one epoch, small slices")
    ap.add_argument("--only", nargs="*", help="task manifest names (task_<name>.yaml) to run")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--max-search-epochs", type=int, default=3)
    ap.add_argument("--max-train-epochs", type=int, default=5)
    ap.add_argument("--limit-train", type=int, default=0,
                    help="cap on the training examples of tasks with a limit_train field (0: the manifests' own)")
    ap.add_argument("--merge", nargs="+", type=Path, default=None,
                    help="merge the rows of these result files (runs in parts) into --out and print the table")
    ap.add_argument("--no-match", action="store_true", help="do not resize the baseline to the searched parameter count")
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/tasks[_quick].json)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    if args.merge:
        merge(args)
        return
    pm = get_plugin_manager()
    manifests = sorted(EXAMPLES.glob("task_*.yaml"))
    names = [p.stem[len("task_"):] for p in manifests]
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            sys.exit(f"no examples/task_<name>.yaml for {unknown}; available: {names}")
        manifests = [p for p, n in zip(manifests, names, strict=True) if n in args.only]
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dnas-bench-tasks-") as tmp:
        for path in manifests:
            name = path.stem[len("task_"):]
            print(f"[{name}] {path.relative_to(ROOT)}", flush=True)
            rows.append(bench_task(name, path, args, pm, Path(tmp)))
            write_json(args, rows, time.perf_counter() - t0)  # after every task: a stopped run keeps what it did
    print()
    print_table(rows)
    total = time.perf_counter() - t0
    print(f"total wall time {total / 60:.1f} min")
    out = write_json(args, rows, total)
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def merge(args) -> None:
    """One result file and table from the files of a run made in parts."""
    rows, seconds, seeds = {}, 0.0, set()
    for path in args.merge:  # a later file's row of a task replaces an earlier one
        d = json.loads(path.read_text())
        seconds += d["total_seconds"]
        for key in ("quick", "max_search_epochs", "max_train_epochs", "limit_train"):
            setattr(args, key, d[key])
        rows.update({r["manifest"]: r for r in d["tasks"]})
    for r in rows.values():
        seeds.update(r["seeds"])
    args.seeds = sorted(seeds)  # each row keeps its own "seeds"
    ordered = [rows[k] for k in sorted(rows)]
    print_table(ordered)
    print(f"total compute time {seconds / 60:.1f} min (sum over the parts)")
    out = write_json(args, ordered, seconds)
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def write_json(args, rows: list[dict[str, Any]], seconds: float) -> Path:
    out = args.out or RESULTS / ("tasks_quick.json" if args.quick else "tasks.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "tasks", "quick": args.quick, "threads": 1, "total_seconds": round(seconds, 1),
               "max_search_epochs": args.max_search_epochs, "max_train_epochs": args.max_train_epochs,
               "limit_train": None if args.quick else (args.limit_train or None), "seeds": args.seeds, "tasks": rows}
    out.write_text(json.dumps(payload, indent=2, default=str))
    return out


if __name__ == "__main__":
    main()
