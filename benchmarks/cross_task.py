"""Cross-task matrix on the seq1d space: do architectures adapt to their task?

1. Search with beta-DARTS (``--strategy`` picks another) over the ``seq1d`` cell
   space on four sequence tasks that share it: SST-2 (text), SMS Spam (text), FSDD
   (audio, log-mel) and MNIST-1D (signal).
2. Train every found architecture on every task with the same budget (the ``fixed``
   strategy and the same ``train:`` section), several seeds each, and print the
   matrix of test accuracy (mean over seeds). For each task (column): the best
   architecture, whether the task's own architecture is best or within noise of
   best, where "noise" is two standard errors of the difference (the test set's
   binomial error plus the seed-to-seed spread).
3. The edit distance between the genotypes (edges whose operation differs, out of 6).
4. MNIST-1D: the searched architecture against the hand-designed baselines
   (``seq_cnn``, ``seq_bigru``) trained with the same longer budget, beside the
   published reference points (logistic 32 %, MLP 68 %, CNN 94 %, GRU 91 %;
   Greydanus 2020, mnist1d README). Goal: >= 0.95.

Every run goes through the orchestrator's own stages (search / derive / retrain /
evaluate); export and report are skipped (nothing here reads them). Runs use one
torch thread: on the shared 2-core machines two threads were 30-100x slower under
load.

    python benchmarks/cross_task.py            # full run (about 10 minutes on the idle 2 cores)
    python benchmarks/cross_task.py --quick    # smoke run (< 1 minute of training)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
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

from dnas_core import Genotype, get_plugin_manager  # noqa: E402
from dnas_core.orchestrator import Orchestrator  # noqa: E402
from dnas_search_spaces.seq1d import edit_distance  # noqa: E402

DATA = ROOT / ".." / "shared" / "data"

#: Task sections (subsets that fit the time budget on 2 cores).
TASKS: dict[str, dict[str, Any]] = {
    "sst2": {"type": "sst2", "limit_train": 2000, "max_len": 32},
    "sms_spam": {"type": "sms_spam", "limit_train": 2000, "max_len": 40},
    "fsdd": {"type": "fsdd", "limit_train": 2000},
    "mnist1d": {"type": "mnist1d", "limit_train": 2000},
}
QUICK_LIMITS = {"sst2": {"limit_train": 300, "limit_test": 200}, "sms_spam": {"limit_train": 300, "limit_test": 200},
                "fsdd": {"limit_train": 300}, "mnist1d": {"limit_train": 300, "limit_test": 200}}
#: The MNIST-1D comparison with the baselines uses the whole training set (4,000).
MNIST1D_FULL = {"type": "mnist1d"}

SETTINGS = {
    "full": {"space": {"type": "seq1d", "C": 16, "N": 1, "stages": 2, "retrain_C": 24, "retrain_N": 1},
             "search": {"type": "beta_darts", "epochs": 4, "batch_size": 64, "arch_lr": 1e-2, "w_lr": 0.05,
                        "eval_supernet": False},
             "search_val_fraction": 0.5,
             "train": {"epochs": 6, "batch_size": 128, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-2},
             "seeds": [0, 1],
             "mnist1d_task": MNIST1D_FULL,
             "mnist1d_train": {"epochs": 25, "batch_size": 128, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-2},
             "mnist1d_seeds": [0],
             "mnist1d_space": {"retrain_C": 32, "retrain_N": 2},
             "baselines": {"seq_cnn": {"type": "seq_cnn", "C": 32, "N": 2, "stages": 2, "kernel": 5},
                           "seq_bigru": {"type": "seq_bigru", "C": 32, "hidden": 48, "layers": 1}}},
    "quick": {"space": {"type": "seq1d", "C": 8, "N": 1, "stages": 2, "retrain_C": 8, "retrain_N": 1},
              "search": {"type": "beta_darts", "epochs": 1, "batch_size": 64, "arch_lr": 1e-2, "w_lr": 0.05,
                         "eval_supernet": False},
              "search_val_fraction": 0.5,
              "train": {"epochs": 1, "batch_size": 64, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-2},
              "seeds": [0],
              "mnist1d_task": {"type": "mnist1d", "limit_train": 300, "limit_test": 200},
              "mnist1d_train": {"epochs": 1, "batch_size": 64, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-2},
              "mnist1d_seeds": [0],
              "mnist1d_space": {"retrain_C": 8, "retrain_N": 1},
              "baselines": {"seq_cnn": {"type": "seq_cnn", "C": 8, "N": 1, "stages": 2, "kernel": 5},
                            "seq_bigru": {"type": "seq_bigru", "C": 8, "hidden": 8, "layers": 1}}},
}
PUBLISHED_MNIST1D = {"logistic": 0.32, "mlp": 0.68, "cnn": 0.94, "gru": 0.91}


def run_stages(pm, manifest: dict[str, Any], out: Path, stages: tuple[str, ...]) -> Orchestrator:
    """Run the given orchestrator stages of ``manifest`` in a fresh run directory."""
    out.mkdir(parents=True, exist_ok=True)
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(manifest))
    orch = Orchestrator.new(path, out=out, pm=pm)
    orch._start()
    for name in stages:
        orch._stage(name, getattr(orch, name))
    return orch


def base_manifest(name: str, task: dict[str, Any], space: dict[str, Any], strategy: dict[str, Any],
                  train: dict[str, Any], seed: int) -> dict[str, Any]:
    return {"name": name, "seed": seed, "task": task, "space": space, "strategy": strategy, "train": train,
            "backend": {"type": "cpu", "threads": 1}}


def train_eval(pm, tmp: Path, tag: str, task: dict, space: dict, genotype: Genotype | None, train: dict,
               seed: int) -> dict[str, Any]:
    strategy = {"type": "fixed"} if genotype is None else {"type": "fixed", "genotype": genotype.to_json()}
    t0 = time.perf_counter()
    orch = run_stages(pm, base_manifest(tag, task, space, strategy, train, seed), tmp / tag,
                      ("search", "derive", "retrain", "evaluate"))
    test = orch.run_dir.read_json("test_metrics.json")["test"]
    return {"accuracy": test["accuracy"], "macro_f1": test.get("macro_f1"), "params": orch.ctx.state["params"],
            "n_test": len(orch.ctx.data.test), "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run on small subsets")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/cross_task[_quick].json)")
    ap.add_argument("--strategy", default=None,
                    help="search strategy type on every task (default: beta_darts), e.g. darts or drnas")
    ap.add_argument("--search-epochs", type=int, default=None,
                    help="search epochs on every task (default: 4, quick: 1); the same for all four tasks")
    args = ap.parse_args()
    mode = "quick" if args.quick else "full"
    S = copy.deepcopy(SETTINGS[mode])
    if args.search_epochs is not None:
        S["search"]["epochs"] = args.search_epochs
    if args.strategy is not None:
        S["search"]["type"] = args.strategy
    tasks = {k: {**v, **(QUICK_LIMITS[k] if args.quick else {})} for k, v in TASKS.items()}
    pm = get_plugin_manager()
    tmp = Path(tempfile.mkdtemp(prefix="dnas-cross-task-"))
    t_all = time.perf_counter()
    result: dict[str, Any] = {"mode": mode, "settings": S, "tasks": tasks, "search": {}, "matrix": {}}

    # 1. Search on every task.
    genotypes: dict[str, Genotype] = {}
    for name, task in tasks.items():
        t0 = time.perf_counter()
        orch = run_stages(pm, base_manifest(f"search-{name}", {**task, "val_fraction": S["search_val_fraction"]},
                                            S["space"], S["search"], S["train"], 0), tmp / f"search-{name}", ("search",))
        g = Genotype.from_json(orch.run_dir.read_json("genotype.json"))
        genotypes[name] = g
        secs = time.perf_counter() - t0
        result["search"][name] = {"genotype": g.to_json(), "seconds": round(secs, 1)}
        print(f"search {name:9s} {secs:6.0f}s  {g}", flush=True)

    # 2. Every architecture on every task, same budget, several seeds.
    names = list(tasks)
    cells: dict[str, dict[str, list[dict[str, Any]]]] = {a: {t: [] for t in names} for a in names}
    for arch in names:
        for task in names:
            for seed in S["seeds"]:
                r = train_eval(pm, tmp, f"{arch}-on-{task}-s{seed}", tasks[task], S["space"], genotypes[arch],
                               S["train"], seed)
                cells[arch][task].append(r)
            accs = [r["accuracy"] for r in cells[arch][task]]
            print(f"  arch of {arch:9s} on {task:9s}: acc {statistics.mean(accs):.4f} "
                  f"(seeds {', '.join(f'{a:.4f}' for a in accs)}; {cells[arch][task][0]['seconds']:.0f}s/run)", flush=True)
    result["matrix"] = cells

    # 3. The table.
    mean = {a: {t: statistics.mean(r["accuracy"] for r in cells[a][t]) for t in names} for a in names}
    print("\nCross-task matrix: test accuracy (mean over seeds "
          f"{S['seeds']}); rows = architecture searched on, columns = task trained and tested on")
    print(f"{'arch / task':14s}" + "".join(f"{t:>11s}" for t in names))
    for a in names:
        print(f"{a:14s}" + "".join(f"{mean[a][t]:11.4f}" for t in names))
    verdicts = {}
    print("\nDiagonal: is each task's own architecture best or within noise of the best?")
    for t in names:
        best = max(names, key=lambda a: mean[a][t])
        n = cells[t][t][0]["n_test"]
        sd = lambda a: statistics.stdev([r["accuracy"] for r in cells[a][t]]) if len(S["seeds"]) > 1 else 0.0  # noqa: E731
        k = len(S["seeds"])
        binom = lambda p: p * (1 - p) / n  # noqa: E731
        se = math.sqrt(binom(mean[t][t]) / k + binom(mean[best][t]) / k + (sd(t) ** 2 + sd(best) ** 2) / k)
        gap = mean[best][t] - mean[t][t]
        verdict = "best" if best == t else ("within noise" if gap <= 2 * se else "NOT within noise")
        verdicts[t] = {"best_arch": best, "own": mean[t][t], "best": mean[best][t], "gap": gap, "two_se": 2 * se,
                       "verdict": verdict}
        print(f"  {t:9s} own {mean[t][t]:.4f}  best {mean[best][t]:.4f} ({best})  gap {gap:+.4f}  "
              f"2*SE {2 * se:.4f}  -> {verdict}")
    result["diagonal"] = verdicts
    result["mean_accuracy"] = mean

    print("\nEdit distance between genotypes (edges with a different operation, of 6)")
    print(f"{'':10s}" + "".join(f"{t:>10s}" for t in names))
    dist = {}
    for a in names:
        dist[a] = {b: edit_distance(genotypes[a], genotypes[b]) for b in names}
        print(f"{a:10s}" + "".join(f"{dist[a][b]:10d}" for b in names))
    result["edit_distance"] = dist
    for a in names:
        print(f"  {a:9s} {genotypes[a]}")

    # 4. MNIST-1D: searched vs baselines, same (longer) budget.
    print("\nMNIST-1D: searched architecture vs hand-designed baselines (same trainer and budget)")
    mn = {}
    space_m = {**S["space"], **S["mnist1d_space"]}
    entries = [("searched seq1d", space_m, genotypes["mnist1d"])] + [(k, v, None) for k, v in S["baselines"].items()]
    for label, space, g in entries:
        runs = [train_eval(pm, tmp, f"mnist1d-{label.replace(' ', '_')}-s{seed}", S["mnist1d_task"], space, g,
                           S["mnist1d_train"], seed) for seed in S["mnist1d_seeds"]]
        accs = [r["accuracy"] for r in runs]
        mn[label] = {"accuracy_mean": statistics.mean(accs), "accuracies": accs, "params": runs[0]["params"],
                     "seconds_per_run": runs[0]["seconds"]}
        print(f"  {label:16s} acc {statistics.mean(accs):.4f} (seeds {', '.join(f'{a:.4f}' for a in accs)})  "
              f"params {runs[0]['params']:,}  {runs[0]['seconds']:.0f}s/run", flush=True)
    for k, v in PUBLISHED_MNIST1D.items():
        print(f"  published {k:9s} acc {v:.2f}   (Greydanus 2020, mnist1d README)")
    goal = mn["searched seq1d"]["accuracy_mean"] >= 0.95
    print(f"  goal searched >= 0.95: {'met' if goal else 'NOT met'}")
    result["mnist1d"] = {"ours": mn, "published": PUBLISHED_MNIST1D, "goal_0.95_met": goal}
    result["wall_seconds"] = round(time.perf_counter() - t_all, 1)
    print(f"\nwall time {result['wall_seconds']:.0f}s")

    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"cross_task{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(copy.deepcopy(result), indent=2, default=str) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
