"""Query efficiency on the NAS-Bench-201 table: random search, regularised evolution,
VAE latent-space BO and the GAN loop.

For each data set (CIFAR-10, CIFAR-100, ImageNet16-120), strategy and seed, the
strategy runs through dnas's query loop with the ``nb201_table`` evaluator and we
record the best test accuracy found after 25, 50, 100, 150 and 300 queries. Printed:
median and interquartile range over the seeds, side by side. Also the architecture
VAE's reconstruction accuracy and validity on held-out architectures.

The VAE is trained once, without labels, on 2,000 random cells (the arch2vec
protocol: the embedding is pre-trained on the space, not per search) and every VAE-BO
run starts from a copy of it; its training time is reported separately.

    python benchmarks/query_efficiency.py            # 20 seeds, 300 queries
    python benchmarks/query_efficiency.py --quick    # smoke run (< 1 minute)

On a shared machine the data sets can run as separate processes and be merged into
the one JSON a full run writes (the VAE is trained with the same seed in each)::

    python benchmarks/query_efficiency.py --datasets cifar10 --out /tmp/qe_cifar10.json   # one per data set
    python benchmarks/query_efficiency.py --merge /tmp/qe_cifar10.json /tmp/qe_cifar100.json /tmp/qe_imagenet16.json
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

from dnas_plugins.evaluators.nb201_table import NB201TableEvaluator  # noqa: E402
from dnas_plugins.generators.vae import GraphVAE  # noqa: E402
from dnas_plugins.strategies.generative import GANSearch, VAEBO  # noqa: E402
from dnas_plugins.strategies.query import run_queries  # noqa: E402
from dnas_plugins.strategies.sampling import RandomSearch, RegularizedEvolution  # noqa: E402
from dnas_search_spaces.nb201.space import NB201Space  # noqa: E402
from dnas_search_spaces.nb201.table import load_table  # noqa: E402

DATASETS = ("cifar10", "cifar100", "imagenet16")
STRATEGIES = {"random_search": RandomSearch, "evolution": RegularizedEvolution, "vae_bo": VAEBO, "gan_search": GANSearch}
GOALS = {"cifar10": 94.20, "cifar100": 73.0, "imagenet16": 46.3}


def train_vae(space: NB201Space, samples: int, epochs: int, seed: int = 0) -> tuple[GraphVAE, dict]:
    """The shared VAE and its figures on held-out cells."""
    rng = np.random.default_rng(seed)
    cells = list(space.all_genotypes())
    order = rng.permutation(len(cells))
    train = [space.encode(cells[i]) for i in order[:samples]]
    held = [space.encode(cells[i]) for i in order[samples: samples + 1000]]
    vae = GraphVAE(epochs=epochs, seed=seed, latent_dim=8)
    t0 = time.perf_counter()
    fit = vae.fit(train)
    seconds = time.perf_counter() - t0
    drawn = vae.generate(1000, np.random.default_rng(seed + 1))
    valid = []
    for g in drawn:
        try:
            valid.append(space.decode(g).hash())
        except ValueError:
            pass
    figures = {
        "train_cells": samples, "held_out_cells": len(held), "epochs": epochs, "train_seconds": round(seconds, 1),
        "train_recon_accuracy": fit["recon_accuracy"],
        "held_out_recon_accuracy": vae.reconstruction_accuracy(held),
        "prior_validity": len(valid) / len(drawn),
        "prior_unique_valid": len(set(valid)),
    }
    return vae, figures


def one_run(name: str, dataset: str, seed: int, budget: int, space: NB201Space, vae_state: dict | None) -> list[float]:
    ev = NB201TableEvaluator(dataset=dataset)
    ev.setup(None)
    strat = STRATEGIES[name](queries=budget)
    if name == "vae_bo":
        strat.generator = GraphVAE(latent_dim=8)
        strat.generator.load_state_dict(vae_state)
    torch.manual_seed(seed)
    state = run_queries(strat, space, ev, budget, seed=seed)
    return state.curve()


def summarise(curves: list[list[float]], at: list[int]) -> dict[str, dict[str, float]]:
    out = {}
    for q in at:
        vals = np.array([c[min(q, len(c)) - 1] for c in curves])
        out[str(q)] = {"median": float(np.median(vals)), "q25": float(np.percentile(vals, 25)),
                       "q75": float(np.percentile(vals, 75))}
    return out


def print_header(ds: str, entry: dict, seeds: int, at: list[int]) -> None:
    print(f"\n{ds}: best test accuracy after N queries, median [IQR] over {seeds} seeds "
          f"(optimum {entry['optimum']:.2f}, goal {entry['goal']})")
    print(f"{'strategy':<14}" + "".join(f"{q:>22}" for q in at) + f"{'s/run':>8}")


def print_row(name: str, row: dict) -> None:
    cells = "".join(f"{s['median']:>8.2f} [{s['q25']:.2f},{s['q75']:.2f}]" for s in row["best_after"].values())
    print(f"{name:<14}{cells}{row['median_seconds_per_run']:>8.1f}", flush=True)


def merge(paths: list[str], out: str) -> None:
    """One results JSON from per-data-set runs of the same seeds and budget."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    first = parts[0]
    for p, part in zip(paths, parts, strict=True):
        if part["seeds"] != first["seeds"] or part["queries_at"] != first["queries_at"]:
            raise SystemExit(f"{p}: {part['seeds']} seeds at {part['queries_at']} queries, but {paths[0]} has "
                             f"{first['seeds']} at {first['queries_at']}: merge runs of one budget only")
    results = {"queries_at": first["queries_at"], "seeds": first["seeds"], "vae": first["vae"], "datasets": {}}
    for ds in DATASETS:
        for p, part in zip(paths, parts, strict=True):
            if ds in part["datasets"]:
                if ds in results["datasets"]:
                    raise SystemExit(f"{p}: data set {ds} is in more than one file")
                results["datasets"][ds] = part["datasets"][ds]
    for ds, entry in results["datasets"].items():
        print_header(ds, entry, results["seeds"], results["queries_at"])
        for name, row in entry["strategies"].items():
            print_row(name, row)
    Path(out).write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 50 queries, CIFAR-10 only")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--datasets", nargs="*", default=list(DATASETS))
    ap.add_argument("--strategies", nargs="*", default=list(STRATEGIES))
    ap.add_argument("--vae-epochs", type=int, default=60)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "query_efficiency.json"))
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="write --out from per-data-set result files instead of running")
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return
    if args.quick:
        args.seeds, args.queries, args.datasets, args.vae_epochs = 2, 50, ["cifar10"], 15
        args.out = args.out.replace(".json", "_quick.json")
    torch.set_num_threads(1)
    at = [q for q in (25, 50, 100, 150, 300) if q <= args.queries]
    space = NB201Space()
    table = load_table()

    vae, vae_figs = train_vae(space, 2000 if not args.quick else 500, args.vae_epochs)
    print(f"VAE (2,000 random cells, {vae_figs['epochs']} epochs, {vae_figs['train_seconds']} s): held-out "
          f"reconstruction {100 * vae_figs['held_out_recon_accuracy']:.1f} % of {vae_figs['held_out_cells']} cells, "
          f"validity of prior samples {100 * vae_figs['prior_validity']:.1f} % "
          f"({vae_figs['prior_unique_valid']} distinct of 1000)")
    vae_state = vae.state_dict()

    results: dict = {"queries_at": at, "seeds": args.seeds, "vae": vae_figs, "datasets": {}}
    for ds in args.datasets:
        optimum = float(table.acc[:, DATASETS.index(ds)].max())
        results["datasets"][ds] = {"optimum": optimum, "goal": GOALS[ds], "strategies": {}}
        print_header(ds, results["datasets"][ds], args.seeds, at)
        for name in args.strategies:
            curves, secs = [], []
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                curves.append(one_run(name, ds, seed, args.queries, space, vae_state))
                secs.append(time.perf_counter() - t0)
            summ = summarise(curves, at)
            reach = [next((i + 1 for i, v in enumerate(c) if v >= GOALS[ds]), None) for c in curves]
            results["datasets"][ds]["strategies"][name] = {
                "best_after": summ, "median_seconds_per_run": float(np.median(secs)),
                "queries_to_goal": reach, "share_reaching_goal": float(np.mean([r is not None for r in reach])),
            }
            print_row(name, results["datasets"][ds]["strategies"][name])
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=1))  # after every row: partial runs keep data
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
