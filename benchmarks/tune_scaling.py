"""Trials completed per minute by ``dnas tune`` with 1, 2 and 4 local worker processes
on the journal-file storage, and with 2 workers on PostgreSQL.

Every study tunes ``strategy.arch_lr`` of a small DARTS search (NAS-Bench-201 cell,
4 channels, scikit-learn digits, 2 search epochs, no retraining; each trial is a
complete run: search, derive, evaluate, ONNX export, report) with the random sampler
and no pruning, so every configuration runs the same kind of trial. Trials use one
torch thread each. The configurations run round-robin, ``--repeats`` times, and the
table shows medians:

* ``trials/min (wall)``: completed trials / wall time of ``dnas tune --workers N``
  (process start-up included);
* ``trials/min (busy)``: completed trials / time from the first trial's start to the
  last trial's end in the storage (start-up excluded);
* ``speed-up``: the busy rate over that of 1 journal worker measured in the same round.

PostgreSQL: the server from ``$DNAS_TEST_POSTGRES_URL``, else one started with
``scripts/start_postgres.sh`` (and stopped at the end); skipped with a message when
neither works.

    python benchmarks/tune_scaling.py            # full run (about 10 minutes on 2 idle cores)
    python benchmarks/tune_scaling.py --quick    # smoke run
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DNAS_PROGRESS", "0")

import optuna  # noqa: E402
import yaml  # noqa: E402

MANIFEST: dict[str, Any] = {
    "name": "scaling",
    "seed": 0,
    "task": {"type": "digits", "val_fraction": 0.5, "limit_train": 200, "limit_test": 50},
    "space": {"type": "nb201", "C": 4, "N": 1, "retrain_C": 4, "retrain_N": 1},
    "strategy": {"type": "darts", "epochs": 2, "batch_size": 32},
    "train": {"epochs": 0},
    "backend": {"type": "cpu", "threads": 1},
    "export": {"type": "onnx"},
    "tune": {"params": {"strategy.arch_lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True}},
             "sampler": {"type": "random"}, "pruner": {"type": "none"}},
}


def start_postgres() -> tuple[str | None, str | None, str]:
    """(url, data dir to stop, note)."""
    url = os.environ.get("DNAS_TEST_POSTGRES_URL")
    if url:
        return url, None, "from DNAS_TEST_POSTGRES_URL"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "start_postgres.sh")], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable})
    if proc.returncode != 0 or not proc.stdout.strip():
        return None, None, f"start_postgres.sh failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}"
    data_dir = proc.stderr.split("data in ")[-1].split(";")[0].strip() if "data in " in proc.stderr else None
    return proc.stdout.strip().splitlines()[-1], data_dir, "started by scripts/start_postgres.sh"


def one_study(workdir: Path, workers: int, storage: str | None, n_trials: int, tag: str) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    m = workdir / f"{tag}.yaml"
    m.write_text(yaml.safe_dump({**MANIFEST, "output": {"root": str(workdir / "runs")}}))
    sdir = workdir / tag
    name = f"scaling-{tag}-{os.getpid()}-{time.time_ns()}"
    cmd = [sys.executable, "-m", "dnas_core", "tune", str(m), "--study", name, "--study-dir", str(sdir),
           "--workers", str(workers), "--n-trials", str(n_trials), "--no-report"]
    if storage:
        cmd += ["--storage", storage]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{tag}: dnas tune failed:\n{proc.stderr[-2000:]}")
    from dnas_core.tune import make_storage
    from dnas_core.tune_config import TuneConfig

    cfg = TuneConfig.model_validate(MANIFEST["tune"])
    study = optuna.load_study(study_name=name, storage=make_storage(storage or str(sdir / "journal.log"), cfg))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return {"workers": workers, "completed": len(done), "wall_s": round(wall, 2), "busy_s": round(span, 2),
            "per_min_wall": 60 * len(done) / wall, "per_min_busy": 60 * len(done) / span,
            "median_trial_s": statistics.median(t.duration.total_seconds() for t in done),
            "distinct_workers": len({t.user_attrs.get("worker") for t in done})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 and 2 journal workers, 2 trials, once")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--trials", type=int, default=None, help="trial budget of each study")
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    repeats = args.repeats or (1 if args.quick else 2)
    n_trials = args.trials or (2 if args.quick else 6)
    configs: list[tuple[str, int, str]] = [("journal", 1, "journal-1"), ("journal", 2, "journal-2")]
    if not args.quick:
        configs.append(("journal", 4, "journal-4"))
    pg_url, pg_dir, pg_note = (None, None, "skipped (--quick)") if args.quick or args.no_postgres else start_postgres()
    if args.no_postgres:
        pg_note = "skipped (--no-postgres)"
    if pg_url:
        configs.append(("postgresql", 2, "postgresql-2"))
    results: dict[str, list[dict[str, Any]]] = {tag: [] for _, _, tag in configs}
    speedups: dict[str, list[float]] = {tag: [] for _, _, tag in configs}
    try:
        with tempfile.TemporaryDirectory(prefix="dnas-tune-scaling-") as tmp:
            for r in range(repeats):
                base = None
                for kind, workers, tag in configs:
                    res = one_study(Path(tmp) / f"r{r}", workers, pg_url if kind == "postgresql" else None, n_trials,
                                    tag)
                    results[tag].append(res)
                    if tag == "journal-1":
                        base = res["per_min_busy"]
                    speedups[tag].append(res["per_min_busy"] / base if base else float("nan"))
                    print(f"  round {r + 1}/{repeats} {tag}: {res['completed']} trials, wall {res['wall_s']} s, "
                          f"busy {res['busy_s']} s", file=sys.stderr, flush=True)
    finally:
        if pg_dir:
            subprocess.run(["bash", str(ROOT / "scripts" / "start_postgres.sh"), "--stop", pg_dir],
                           capture_output=True)
    rows = []
    for kind, workers, tag in configs:
        rs = results[tag]
        rows.append({"storage": kind, "workers": workers, "trials": n_trials, "repeats": len(rs),
                     "trials_per_min_wall": round(statistics.median(r["per_min_wall"] for r in rs), 2),
                     "trials_per_min_busy": round(statistics.median(r["per_min_busy"] for r in rs), 2),
                     "speedup_vs_1_journal": round(statistics.median(speedups[tag]), 2),
                     "median_trial_s": round(statistics.median(r["median_trial_s"] for r in rs), 2),
                     "workers_that_ran_trials": min(r["distinct_workers"] for r in rs),
                     "runs": rs})
    print(f"\ndnas tune scaling ({n_trials} trials per study, medians of {repeats} round(s); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    print(f"{'storage':<11} {'workers':>7} {'trials/min wall':>16} {'trials/min busy':>16} {'speed-up':>9} "
          f"{'median trial s':>15}")
    for row in rows:
        print(f"{row['storage']:<11} {row['workers']:>7} {row['trials_per_min_wall']:>16.2f} "
              f"{row['trials_per_min_busy']:>16.2f} {row['speedup_vs_1_journal']:>9.2f} {row['median_trial_s']:>15.2f}")
    print(f"PostgreSQL: {pg_note}")
    out = ROOT / "benchmarks" / "results" / ("tune_scaling_quick.json" if args.quick else "tune_scaling.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "tune_scaling", "quick": args.quick, "rows": rows, "postgresql": pg_note,
                               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                           "load_average_end": os.getloadavg()},
                               "optuna": optuna.__version__}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
