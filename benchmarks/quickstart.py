"""Quickstart figures: wall time (median of N runs), test accuracy, ONNX max abs
difference, and determinism (genotypes of runs with the same seed).

    python benchmarks/quickstart.py            # 3 full runs of examples/quickstart.yaml
    python benchmarks/quickstart.py --quick    # 2 one-epoch runs (smoke test, < 1 minute)

Goals (issue 2): median wall time <= 180 s on 2 cores, test accuracy >= 0.97,
ONNX max abs difference <= 1e-4, equal genotypes for equal seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "examples" / "quickstart.yaml"


def one_run(out: Path, overrides: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dnas_core", "run", str(MANIFEST), "--out", str(out), *overrides],
                          capture_output=True, text=True, env=dict(os.environ, DNAS_PROGRESS="0"), cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads((out / "result.json").read_text())
    return {"wall_s": wall, "accuracy": result["test_metrics"]["accuracy"], "onnx_max_abs_diff": result["onnx_max_abs_diff"],
            "genotype": result["genotype"]["text"], "hash": result["genotype"]["hash"], "stage_seconds": result["stage_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two one-epoch runs")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    overrides = ["strategy.epochs=1", "train.epochs=1"] if args.quick else []
    n = 2 if args.quick else max(2, args.runs)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            runs.append(one_run(Path(tmp) / f"run{i}", overrides))
            r = runs[-1]
            print(f"run {i + 1}/{n}: {r['wall_s']:.1f} s, accuracy {r['accuracy']:.4f}, onnx diff {r['onnx_max_abs_diff']:.2e}",
                  flush=True)
    walls = [r["wall_s"] for r in runs]
    accs = [r["accuracy"] for r in runs]
    summary = {
        "benchmark": "quickstart",
        "quick": args.quick,
        "runs": n,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "wall_s_median": statistics.median(walls),
        "wall_s_all": walls,
        "accuracy_median": statistics.median(accs),
        "accuracy_all": accs,
        "onnx_max_abs_diff_max": max(r["onnx_max_abs_diff"] for r in runs),
        "same_seed_same_genotype": len({r["hash"] for r in runs}) == 1,
        "genotype": runs[0]["genotype"],
        "stage_seconds_median": {k: statistics.median(r["stage_seconds"][k] for r in runs) for k in runs[0]["stage_seconds"]},
        "goals": {"wall_s_median_max": 180, "accuracy_min": 0.97, "onnx_max_abs_diff_max": 1e-4},
    }
    rows = [
        ("wall time, median of %d runs" % n, f"{summary['wall_s_median']:.1f} s", "<= 180 s"),
        ("test accuracy (median)", f"{summary['accuracy_median']:.4f}", ">= 0.97"),
        ("ONNX max abs diff (worst run)", f"{summary['onnx_max_abs_diff_max']:.2e}", "<= 1e-4"),
        ("same seed -> same genotype", str(summary["same_seed_same_genotype"]), "True"),
    ]
    print()
    print(f"{'figure':<34} {'measured':>12}   goal")
    print("-" * 60)
    for name, value, goal in rows:
        print(f"{name:<34} {value:>12}   {goal}")
    print(f"genotype: {summary['genotype']}")
    print("stage seconds (median):", ", ".join(f"{k} {v:.1f}" for k, v in summary["stage_seconds_median"].items()))
    out = ROOT / "benchmarks" / "results" / ("quickstart_quick.json" if args.quick else "quickstart.json")
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
