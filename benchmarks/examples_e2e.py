"""End-to-end time of every task's example manifest (issue 4: each fits 10 minutes on
2 cores).

Runs ``dnas run examples/task_<name>.yaml`` as a user would (search, derive, retrain,
test, ONNX export checked against onnxruntime, report), one run at a time so that each
has the whole machine, and prints per example the wall time of the whole command, the
time of each stage, the test metric and the ONNX difference, against the 600 s goal.

    python benchmarks/examples_e2e.py                     # every examples/task_*.yaml
    python benchmarks/examples_e2e.py --only fsdd sst2    # some of them
    python benchmarks/examples_e2e.py --quick             # smoke run: 2 small examples, 1 epoch each

Writes the same figures to ``benchmarks/results/examples_e2e.json`` (``_quick`` with
``--quick``). Wall times are single runs of long jobs: run it on an otherwise idle
machine, and read them as "fits / does not fit", not to the second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 600.0
QUICK = ["task_breast_cancer", "task_digits"]


def one_run(manifest: Path, out: Path, overrides: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dnas_core", "run", str(manifest), "--out", str(out), *overrides],
                          capture_output=True, text=True, env=dict(os.environ, DNAS_PROGRESS="0"), cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"wall_s": round(wall, 1), "error": proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]}
    result = json.loads((out / "result.json").read_text())
    metrics = result.get("test_metrics") or {}
    primary = result.get("primary_metric") or next(iter(metrics), None)
    return {"wall_s": round(wall, 1), "stage_seconds": result.get("stage_seconds", {}),
            "metric": primary, "value": metrics.get(primary), "onnx_max_abs_diff": result.get("onnx_max_abs_diff"),
            "genotype": (result.get("genotype") or {}).get("text")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 small examples with 1 search and 1 train epoch")
    ap.add_argument("--only", nargs="*", help="example names (task_<name>.yaml or <name>)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    names = sorted(p.stem for p in (ROOT / "examples").glob("task_*.yaml"))
    if args.only:
        wanted = {n if n.startswith("task_") else f"task_{n}" for n in args.only}
        unknown = wanted - set(names)
        if unknown:
            ap.error(f"no example {sorted(unknown)}; choose from {names}")
        names = [n for n in names if n in wanted]
    elif args.quick:
        names = QUICK
    overrides = ["strategy.epochs=1", "train.epochs=1"] if args.quick else []
    out_path = args.out or ROOT / "benchmarks" / "results" / f"examples_e2e{'_quick' if args.quick else ''}.json"

    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="dnas-e2e-") as tmp:
        for name in names:
            print(f"  {name} ...", file=sys.stderr, flush=True)
            rows[name] = one_run(ROOT / "examples" / f"{name}.yaml", Path(tmp) / name, overrides)
            write(rows, args, out_path, complete=False)
    lines = table(rows)
    print("\n".join(lines))
    write(rows, args, out_path, complete=True, lines=lines)
    return 0 if all("error" not in r for r in rows.values()) else 1


def table(rows: dict[str, dict]) -> list[str]:
    stages = ("search", "retrain", "evaluate", "export", "report")
    head = f"{'example':22s} {'wall s':>7s} " + " ".join(f"{s:>8s}" for s in stages) + f" {'metric':>16s} {'onnx diff':>9s}  goal"
    lines = [f"End-to-end `dnas run examples/task_*.yaml`, one run at a time on {os.cpu_count()} cores; goal <= {GOAL_S:.0f} s",
             "", head]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"{name:22s} {r['wall_s']:7.1f}  FAILED: {' '.join(r['error'])[:120]}")
            continue
        st = r["stage_seconds"]
        cells = " ".join(f"{st.get(s, float('nan')):8.1f}" for s in stages)
        metric = f"{r['metric']} {r['value']:.4f}" if r["value"] is not None else "-"
        diff = f"{r['onnx_max_abs_diff']:.1e}" if r["onnx_max_abs_diff"] is not None else "-"
        lines.append(f"{name:22s} {r['wall_s']:7.1f} {cells} {metric:>16s} {diff:>9s}  "
                     + ("met" if r["wall_s"] <= GOAL_S else "MISSED"))
    return lines


def write(rows: dict, args: argparse.Namespace, path: Path, complete: bool, lines: list[str] | None = None) -> None:
    import torch

    out = {"benchmark": "examples_e2e", "quick": args.quick, "complete": complete, "goal_s": GOAL_S,
           "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
           "table_text": lines or [], "examples": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
