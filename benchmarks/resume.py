"""Kill/resume reliability: SIGKILL a real `dnas run` at a random point of search or
retraining, `dnas run --resume` it, and check that it ends identical to the
uninterrupted run of the same manifest and seed (genotype, every epoch record, test
metrics and every weight of the retrained model).

The kill point is drawn per trial: after k epoch records (k uniform over all search and
retrain epochs) plus a random delay of up to 0.5 s, so kills land inside epochs, during
checkpoint writes and between stages alike.

    python benchmarks/resume.py            # 3 + 3 epochs, 10 trials
    python benchmarks/resume.py --quick    # smoke run: 1 + 1 epochs, 1 trial
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DNAS_PROGRESS", "0")

from dnas_core.testing.faults import compare_runs, kill_and_resume, leftovers, run_cli  # noqa: E402

MANIFEST = ROOT / "tests" / "data" / "reports" / "mini.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (1 trial, 1 + 1 epochs)")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    args = ap.parse_args()
    epochs = 1 if args.quick else 3
    trials = args.trials or (1 if args.quick else 10)
    overrides = [f"strategy.epochs={epochs}", f"train.epochs={epochs}"]
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dnas-resume-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        ref = run_cli(["run", str(MANIFEST), *overrides, "--out", str(tmp / "ref")])
        ref_s = time.perf_counter() - t0
        if ref.returncode != 0:
            raise SystemExit(f"the uninterrupted run failed: {ref.stderr[-2000:]}")
        for i in range(trials):
            out = tmp / f"trial{i}"
            t0 = time.perf_counter()
            trial = kill_and_resume(MANIFEST, out, rng, epochs=2 * epochs, overrides=overrides)
            seconds = time.perf_counter() - t0
            diffs = compare_runs(tmp / "ref", out) if trial.resume_rc == 0 else [f"resume failed: {trial.resume_stderr}"]
            left = leftovers(out)
            rows.append({"trial": i, "killed": trial.killed, "killed_after_records": trial.killed_after_records,
                         "delay_s": round(trial.delay_s, 3), "resume_rc": trial.resume_rc, "identical": not diffs and not left,
                         "differences": diffs[:3] + [f"leftover {p}" for p in left[:3]], "seconds": round(seconds, 1)})
            print(f"trial {i:2d}: killed after {trial.killed_after_records} records + {trial.delay_s:.2f}s -> "
                  f"{'identical' if rows[-1]['identical'] else 'DIFFERENT: ' + '; '.join(rows[-1]['differences'])}",
                  flush=True)
    killed = [r for r in rows if r["killed"]]
    identical = sum(r["identical"] for r in killed)
    summary = {
        "manifest": str(MANIFEST.relative_to(ROOT)), "epochs": {"search": epochs, "retrain": epochs},
        "trials": len(rows), "killed": len(killed), "identical": identical,
        "uninterrupted_run_s": round(ref_s, 1),
        "median_kill_resume_s": round(statistics.median(r["seconds"] for r in rows), 1) if rows else None,
        "ratio_kill_resume_vs_uninterrupted": round(statistics.median(r["seconds"] for r in rows) / ref_s, 2) if rows else None,
        "rows": rows,
    }
    print()
    print("| trials | killed | identical to uninterrupted | median kill+resume s | uninterrupted s | ratio |")
    print("|---|---|---|---|---|---|")
    print(f"| {summary['trials']} | {summary['killed']} | {identical}/{len(killed)} | {summary['median_kill_resume_s']} "
          f"| {summary['uninterrupted_run_s']} | {summary['ratio_kill_resume_vs_uninterrupted']} |")
    out = ROOT / "benchmarks" / "results" / ("resume_quick.json" if args.quick else "resume.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwritten {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
