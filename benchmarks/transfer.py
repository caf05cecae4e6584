"""Transfer across tasks on the NAS-Bench-201 table: CIFAR-10 and CIFAR-100 runs warm
start a search on ImageNet16-120.

1. Source runs: for each seed, regularised evolution spends 300 queries on CIFAR-10
   and 300 on CIFAR-100; their evaluations form a run store (the same records
   ``runstore.json`` holds).
2. Target: queries until a search on ImageNet16-120 first finds a cell at or above the
   target accuracy, with and without warm start from the store (evolution: the store's
   top 10 cells as initial population; VAE-BO: the same as BO seed points). Median over
   the seeds, side by side; runs that never reach the target count as the budget.
3. Task-conditioned generation (MetaD2A spirit): a conditional graph VAE is trained on
   the top 10 % of each source run, conditioned on each task's statistics embedding;
   its first 10 proposals for ImageNet16-120 (from that task's embedding alone, before
   any query) against 10 random cells.

    python benchmarks/transfer.py            # 20 seeds
    python benchmarks/transfer.py --quick    # smoke run (< 1 minute)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DNAS_PROGRESS", "0")

from dnas_core.runstore import RunRecord, RunStore  # noqa: E402
from dnas_plugins.evaluators.nb201_table import NB201TableEvaluator  # noqa: E402
from dnas_plugins.generators.task_embedding import propose, task_features, train_task_conditioned  # noqa: E402
from dnas_plugins.generators.vae import GraphVAE  # noqa: E402
from dnas_plugins.strategies.generative import VAEBO  # noqa: E402
from dnas_plugins.strategies.query import run_queries  # noqa: E402
from dnas_plugins.strategies.sampling import RegularizedEvolution  # noqa: E402
from dnas_search_spaces.nb201.space import NB201Space  # noqa: E402
from dnas_search_spaces.nb201.table import load_table  # noqa: E402

SOURCES = ("cifar10", "cifar100")
TARGET = "imagenet16"


def evaluator(ds: str) -> NB201TableEvaluator:
    ev = NB201TableEvaluator(dataset=ds)
    ev.setup(None)
    return ev


def source_store(space: NB201Space, seed: int, budget: int) -> RunStore:
    records = []
    for ds in SOURCES:
        ev = evaluator(ds)
        state = run_queries(RegularizedEvolution(), space, ev, budget, seed=seed)
        records.append(RunRecord(path=Path("."), name=f"{ds}-{seed}", task=ev.task_descriptor(), space="nb201",
                                 strategy="evolution", metric=ev.metric, direction="maximize",
                                 evaluations=state.evaluated(), final=state.best[0],
                                 task_features=task_features(descriptor=ev.task_descriptor()).tolist()))
    return RunStore(records)


def queries_to(curve: list[float], target: float, budget: int) -> int:
    return next((i + 1 for i, v in enumerate(curve) if v >= target), budget)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--target", type=float, default=46.3, help="ImageNet16-120 test accuracy to reach")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "transfer.json"))
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.budget = 2, 60
        args.out = args.out.replace(".json", "_quick.json")
    torch.set_num_threads(1)
    space = NB201Space()
    table = load_table()
    col = table.acc[:, 2]
    print(f"target: ImageNet16-120 test accuracy >= {args.target} (top {table.percentile(args.target, TARGET):.2f} % "
          f"of {len(col)} cells; optimum {col.max():.2f}); sources: {', '.join(SOURCES)}, {args.budget} queries each")

    # One unsupervised VAE for every VAE-BO run (as in benchmarks/query_efficiency.py).
    rng = np.random.default_rng(0)
    cells = list(space.all_genotypes())
    vae = GraphVAE(epochs=15 if args.quick else 60, latent_dim=8)
    vae.fit([space.encode(cells[i]) for i in rng.permutation(len(cells))[:2000]])
    vae_state = vae.state_dict()

    rows: dict[str, list[int]] = {k: [] for k in ("evolution", "evolution+warm", "vae_bo", "vae_bo+warm")}
    proposals: dict[str, list[float]] = {"conditioned_mean": [], "conditioned_best": [], "random_mean": [], "random_best": []}
    t0 = time.perf_counter()
    target_feats = task_features(descriptor=evaluator(TARGET).task_descriptor())
    for seed in range(args.seeds):
        store = source_store(space, seed, args.budget)
        warm = store.top_genotypes("nb201", 10)
        for name in rows:
            base, _, w = name.partition("+")
            if base == "evolution":
                strat = RegularizedEvolution()
            else:
                strat = VAEBO()
                strat.generator = GraphVAE(latent_dim=8)
                strat.generator.load_state_dict(vae_state)
            state = run_queries(strat, space, evaluator(TARGET), args.budget, seed=seed, warm=warm if w else [])
            rows[name].append(queries_to(state.curve(), args.target, args.budget))
        cond, _ = train_task_conditioned(store, space, top_fraction=0.1, epochs=100 if not args.quick else 40,
                                         latent_dim=4, hidden=32, batch_size=16, seed=seed)
        prng = np.random.default_rng(1000 + seed)
        proposed = propose(cond, space, target_feats, 10, prng)
        proposals.setdefault("distinct", []).append(len(proposed))
        got = [table.lookup(g).imagenet16 for g in proposed] or [float("nan")]
        rnd = [table.lookup(space.sample(prng)).imagenet16 for _ in range(10)]
        proposals["conditioned_mean"].append(float(np.mean(got)))
        proposals["conditioned_best"].append(float(np.max(got)))
        proposals["random_mean"].append(float(np.mean(rnd)))
        proposals["random_best"].append(float(np.max(rnd)))
        print(f"  seed {seed}: " + ", ".join(f"{k} {v[-1]}" for k, v in rows.items())
              + f"; conditioned mean {proposals['conditioned_mean'][-1]:.2f} vs random {proposals['random_mean'][-1]:.2f}",
              flush=True)

    print(f"\nqueries to reach {args.target} on ImageNet16-120 (median [IQR] over {args.seeds} seeds; "
          f"{args.budget} = not reached)")
    summary = {}
    for name, vals in rows.items():
        a = np.array(vals)
        summary[name] = {"median": float(np.median(a)), "q25": float(np.percentile(a, 25)),
                         "q75": float(np.percentile(a, 75)), "reached": float(np.mean(a < args.budget)),
                         "per_seed": vals}
        print(f"  {name:<16}{np.median(a):>8.1f} [{np.percentile(a, 25):.0f}, {np.percentile(a, 75):.0f}]"
              f"   reached in {100 * np.mean(a < args.budget):.0f} % of seeds")
    ratios = {}
    for base in ("evolution", "vae_bo"):
        # Per seed, side by side; a median of ratios, not a ratio of medians.
        r = np.array(rows[base], dtype=float) / np.array(rows[f"{base}+warm"], dtype=float)
        ratios[base] = float(np.median(r))
        print(f"  {base}: median per-seed ratio cold / warm = {ratios[base]:.1f}x fewer queries with transfer")
    print("\ntask-conditioned generator, first 10 proposals for ImageNet16-120 vs 10 random cells "
          "(median over seeds of the mean / best of the 10)")
    for k in ("mean", "best"):
        c, r = np.median(proposals[f"conditioned_{k}"]), np.median(proposals[f"random_{k}"])
        print(f"  {k:<5} conditioned {c:.2f}   random {r:.2f}")
    print(f"  distinct proposals per seed: median {np.median(proposals['distinct']):.0f} of 10")
    wins = float(np.mean(np.array(proposals["conditioned_mean"]) > np.array(proposals["random_mean"])))
    print(f"  conditioned mean above random mean in {100 * wins:.0f} % of seeds; wall {time.perf_counter() - t0:.0f} s")
    out = {"target": args.target, "budget": args.budget, "seeds": args.seeds, "queries_to_target": summary,
           "median_ratio_cold_over_warm": ratios, "proposals": proposals, "conditioned_beats_random_share": wins}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
