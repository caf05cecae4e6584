"""How well the latency model predicts measured latency.

For each search space (NAS-Bench-201 at its benchmark size C=16, N=5; the mobile space
at its defaults) and each backend (PyTorch eager on the CPU; ONNX Runtime CPU), at the
input shape of Fashion-MNIST (1x28x28, batch 1):

1. build the latency table fresh (per-operator measurements + the fit on 16 measured
   whole networks, seed 0);
2. draw 50 other random architectures (seed 1), measure each whole network, and
   compare with the table's prediction: MAPE and Spearman rank correlation.

Goal: MAPE <= 10 %, Spearman >= 0.9.

Both backends run one thread and read the calling thread's CPU time
(``clock: thread_cpu``): the development machines are 2 cores shared by several
processes, where wall time measures the neighbours' load more than the network.
Every module is measured in interleaved rounds (``MeasureSettings.rounds``); the
latency of one round is the median of its repeats.

    python benchmarks/latency_model.py            # full run (about 10 minutes on 2 busy cores)
    python benchmarks/latency_model.py --quick    # smoke run, CPU backend only (< 1 minute; too few
                                                  # repeats for meaningful figures)
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from dnas_core import get_plugin_manager  # noqa: E402
from dnas_core.latency import MeasureSettings, build_latency_table, measure_networks  # noqa: E402

SPACES = {"nb201": {"C": 16, "N": 5}, "mobile": {}}
BACKENDS = {"cpu": {"threads": 1, "clock": "thread_cpu"}, "onnxruntime": {"threads": 1, "clock": "thread_cpu"}}


def make_task(reg, quick: bool):
    data = ROOT.parent / "shared" / "data" / "vision" / "fashion-mnist"
    if data.is_dir():
        task = reg.tasks.create("fashion_mnist", {"path": str(data), "limit_train": 200, "limit_test": 50})
    else:  # the 8x8 digits bundled with scikit-learn
        task = reg.tasks.create("digits", {"limit_train": 200, "limit_test": 50})
    task.data(0)
    return task


def run(quick: bool) -> dict:
    torch.set_num_threads(1)
    reg = get_plugin_manager().registries
    task = make_task(reg, quick)
    n_arch = 8 if quick else 50
    settings = MeasureSettings(repeats=5 if quick else 20, rounds=2 if quick else 5, fit_networks=6 if quick else 16)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for space_name, space_cfg in SPACES.items():
            space = reg.spaces.create(space_name, space_cfg)
            for backend_name, backend_cfg in BACKENDS.items():
                if quick and backend_name != "cpu":
                    continue
                backend = reg.backends.create(backend_name, backend_cfg)
                backend.setup()
                t0 = time.perf_counter()
                table = build_latency_table(space, task, backend, settings, cache_dir=cache, refresh=True)
                t_build = time.perf_counter() - t0
                rng = np.random.default_rng(1)
                genotypes = [space.sample(rng) for _ in range(n_arch)]
                predicted = np.array([table.predict(space, g, task) for g in genotypes])
                measured = np.array(measure_networks(space, genotypes, task, backend, settings))
                ape = np.abs(predicted - measured) / measured
                rows.append({
                    "space": space_name, "backend": backend_name, "architectures": n_arch,
                    "operators": len(table.ops), "table_seconds": round(t_build, 1),
                    "mape_percent": round(100 * float(ape.mean()), 2),
                    "max_ape_percent": round(100 * float(ape.max()), 2),
                    "spearman": round(float(spearmanr(predicted, measured).statistic), 4),
                    "measured_ms_median": round(float(np.median(measured)), 4),
                    "measured_ms_range": [round(float(measured.min()), 4), round(float(measured.max()), 4)],
                    "fit": {"scale": round(table.scale, 4), "const_ms": round(table.const_ms, 4),
                            "scales": {k: round(v, 3) for k, v in table.scales.items()}},
                    "points": [[round(float(p), 5), round(float(m), 5)] for p, m in zip(predicted, measured)],
                })
                r = rows[-1]
                print(f"  {space_name:7s} {backend_name:12s} MAPE {r['mape_percent']:6.2f} %  "
                      f"Spearman {r['spearman']:.3f}  ({r['table_seconds']} s to build)", flush=True)
    return {"task": task.name, "input_shape": list(task.io_spec().input_shape), "batch_size": 1,
            "settings": {"repeats": settings.repeats, "rounds": settings.rounds, "fit_networks": settings.fit_networks,
                         "combine": settings.combine, "ridge": settings.ridge},
            "goal": {"mape_percent_max": 10.0, "spearman_min": 0.9}, "results": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 architectures, CPU only, fewer repeats")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "latency_model.json"))
    args = ap.parse_args()
    out = run(args.quick)
    print()
    print(f"Latency model on {out['task']} {out['input_shape']}, batch 1 (goal: MAPE <= 10 %, Spearman >= 0.9)")
    print(f"{'space':8s} {'backend':12s} {'archs':>5s} {'ops':>4s} {'MAPE %':>7s} {'max APE %':>9s} "
          f"{'Spearman':>8s} {'median ms':>9s}  goal")
    for r in out["results"]:
        ok = r["mape_percent"] <= 10 and r["spearman"] >= 0.9
        print(f"{r['space']:8s} {r['backend']:12s} {r['architectures']:5d} {r['operators']:4d} {r['mape_percent']:7.2f} "
              f"{r['max_ape_percent']:9.2f} {r['spearman']:8.3f} {r['measured_ms_median']:9.3f}  {'met' if ok else 'MISSED'}")
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
