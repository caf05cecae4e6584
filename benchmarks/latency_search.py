"""Latency-constrained search: does the found architecture meet ``max_latency_ms`` when
measured, and what accuracy does the limit cost?

On scikit-learn's digits (8x8, 1,797 images; no download) over the mobile space
(MBConv k3/5/7 x e1/3/6 or skip, 7 layers):

1. FBNet without a latency limit (its own CE * alpha * log(LAT)^beta loss only);
2. FBNet with ``constraints.max_latency_ms`` = ``--limit-fraction`` (default 0.7) of the
   predicted latency of the architecture found in 1;
3. ProxylessNAS (two paths) with the same limit.

Every run goes through the orchestrator (search, derive, retrain, evaluate); the found
networks are then measured side by side (interleaved rounds) on the latency backend the
table was built with: PyTorch eager, one thread, the calling thread's CPU time, batch 1.
The table prints test accuracy, predicted and measured latency, and whether the
measured latency meets the limit; the accuracy-vs-latency scatter with its Pareto front
is written next to the JSON.

    python benchmarks/latency_search.py            # full run (about 15 minutes on 2 busy cores)
    python benchmarks/latency_search.py --quick    # smoke run (about a minute)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DNAS_PROGRESS", "0")

import torch  # noqa: E402
import yaml  # noqa: E402

from dnas_core import Genotype, get_plugin_manager  # noqa: E402
from dnas_core.constraints import latency_settings  # noqa: E402
from dnas_core.latency import MeasureSettings, build_latency_table, measure_networks  # noqa: E402
from dnas_core.manifest import ConstraintsConfig  # noqa: E402
from dnas_core.orchestrator import run_manifest  # noqa: E402
from dnas_core.pareto import plot_pareto  # noqa: E402

LAT_BACKEND = {"type": "cpu", "threads": 1, "clock": "thread_cpu"}


def manifest(name: str, strategy: dict, epochs: int, retrain: int, constraints: dict, space: dict) -> dict:
    return {
        "name": name, "seed": 0,
        "task": {"type": "digits", "val_fraction": 0.5},
        "space": {"type": "mobile", **space},
        "strategy": {"epochs": epochs, "batch_size": 64, **strategy},
        "train": {"epochs": retrain, "batch_size": 64, "lr": 0.05},
        "backend": {"type": "cpu", "threads": 1},
        "constraints": constraints,
        "export": None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 search epoch, 2 retrain epochs, smaller space")
    ap.add_argument("--limit-fraction", type=float, default=0.7,
                    help="max_latency_ms as a fraction of the unconstrained architecture's predicted latency")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "latency_search.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    epochs, retrain = (1, 2) if args.quick else (8, 20)
    space = {"stages": [{"channels": 16, "layers": 1, "stride": 1}, {"channels": 24, "layers": 2, "stride": 2}],
             "last_channels": 64} if args.quick else {}
    base_constraints = {"latency_backend": LAT_BACKEND, "latency_repeats": 10 if args.quick else 30,
                        "latency_fit_networks": 6 if args.quick else 16}
    reg = get_plugin_manager().registries
    sp = reg.spaces.create("mobile", space)
    task = reg.tasks.create("digits", {"val_fraction": 0.5})
    task.data(0)
    backend = reg.backends.create("cpu", {k: v for k, v in LAT_BACKEND.items() if k != "type"})

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DNAS_LATENCY_CACHE"] = str(Path(tmp) / "latency")
        backend.setup()
        table = build_latency_table(sp, task, backend, latency_settings(ConstraintsConfig(**base_constraints)))
        measure = MeasureSettings(repeats=30, rounds=9)

        def run(name: str, strategy: dict, constraints: dict) -> dict:
            m = manifest(name, strategy, epochs, retrain, {**base_constraints, **constraints}, space)
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(yaml.safe_dump(m))
            t0 = time.perf_counter()
            run_dir, result = run_manifest(path, out=Path(tmp) / name)
            g = Genotype.from_json(result["genotype"])
            summary = json.loads((run_dir / "search_summary.json").read_text())
            print(f"  {name}: {g} ({time.perf_counter() - t0:.0f} s)", flush=True)
            return {"name": name, "strategy": strategy["type"], "genotype": str(g),
                    "accuracy": result["test_metrics"]["accuracy"], "params": result["params"],
                    "predicted_ms": table.predict(sp, g, task), "max_latency_ms": constraints.get("max_latency_ms"),
                    "latency_constraint": summary.get("latency_constraint"), "seconds": round(time.perf_counter() - t0)}

        rows.append(run("fbnet-unconstrained", {"type": "fbnet"}, {}))
        # The limit: a fraction of the unconstrained architecture's predicted latency (the
        # table is stable; one measurement on a busy machine is not), above the fastest one.
        lat0 = rows[0]["predicted_ms"]
        fastest = table.predict(sp, sp.genotype([ly.choices[-1] if ly.can_skip else "k3_e1" for ly in sp.layers()]), task)
        limit = max(args.limit_fraction * lat0, 1.05 * fastest)
        rows.append(run("fbnet-constrained", {"type": "fbnet"}, {"max_latency_ms": limit}))
        rows.append(run("proxyless-constrained", {"type": "proxylessnas", "paths": 2}, {"max_latency_ms": limit}))

        # All found networks measured side by side.
        measured = measure_networks(sp, [sp.from_string(r["genotype"]) for r in rows], task, backend, measure)
        for r, m in zip(rows, measured, strict=True):
            r["measured_ms"] = m
            r["meets_limit"] = None if r["max_latency_ms"] is None else bool(m <= r["max_latency_ms"])

    out = {"task": "digits", "space": "mobile", "space_config": space, "latency_backend": LAT_BACKEND,
           "search_epochs": epochs, "retrain_epochs": retrain, "limit_ms": limit, "limit_fraction": args.limit_fraction,
           "unconstrained_predicted_ms": lat0, "runs": rows,
           "table_fit": {"scale": table.scale, "const_ms": table.const_ms}}
    print()
    print(f"Latency-constrained search on digits, mobile space; limit {limit:.3f} ms "
          f"({args.limit_fraction:.0%} of the unconstrained architecture's predicted {lat0:.3f} ms)")
    print(f"{'run':24s} {'test acc':>8s} {'params':>8s} {'pred ms':>8s} {'meas ms':>8s} {'limit':>7s} {'meets':>6s}  genotype")
    for r in rows:
        lim = "-" if r["max_latency_ms"] is None else f"{r['max_latency_ms']:.3f}"
        meets = "-" if r["meets_limit"] is None else ("yes" if r["meets_limit"] else "NO")
        print(f"{r['name']:24s} {r['accuracy']:8.4f} {r['params']:8d} {r['predicted_ms']:8.3f} {r['measured_ms']:8.3f} "
              f"{lim:>7s} {meets:>6s}  {r['genotype']}")
    base = rows[0]
    for r in rows[1:]:
        print(f"{r['name']}: accuracy {r['accuracy'] - base['accuracy']:+.4f} vs unconstrained, "
              f"latency x{r['measured_ms'] / base['measured_ms']:.2f}")
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
        png = Path(args.out).with_name("latency_search_pareto.png")
        plot_pareto([(r["measured_ms"], r["accuracy"]) for r in rows], png, labels=[r["name"] for r in rows],
                    x_limit=limit, title="digits / mobile: accuracy vs measured latency")
        print(f"\nwrote {args.out} and {png}")


if __name__ == "__main__":
    main()
