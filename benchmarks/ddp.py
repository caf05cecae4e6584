"""Data-parallel supernet training: throughput of 1 vs 2 processes, and agreement.

The same DARTS search (NAS-Bench-201 cell with 16 channels on 2,048 Fashion-MNIST
images; ``--quick``: 4 channels on scikit-learn digits; first order) runs as ``dnas
run`` with one process and as ``dnas run --nproc 2`` (torchrun, gloo on the CPU) with
the same global batch, once with ``sync_batch_norm: true`` (the default: batch norm
over the global batch, one all-reduce per batch-norm call) and once with per-rank
batch norm (``sync_batch_norm: false``, as plain DDP). Every process uses one torch thread (on the shared
2-core machines, two threads in one process were many times slower under load than
one), so the comparison is one core against two. The two run
round-robin ``--repeats`` times; the table shows medians of:

* ``samples/s``: training examples through the search (each one weight step and one
  architecture step) per second of the search stage;
* ``speed-up``: 2-process throughput over 1-process throughput of the same round;
* ``max |alpha_2 - alpha_1|``: the largest difference between the architecture
  parameters of the 2-process and the 1-process run. The gradient average and the
  global batch-norm statistics make them the same computation up to float32 rounding,
  but Adam divides each gradient by its running magnitude, so rounding in a component
  whose gradient nearly cancels can flip its step. The *rounding reference* measures
  that effect alone: the same 1-process run with the NCHW memory format instead of
  channels-last (the same mathematics, other convolution kernels);
* ``max diff between ranks``: the largest difference between the two ranks'
  architecture parameters at the end (all-gathered; 0 means identical);
* whether the derived genotypes are equal.

    python benchmarks/ddp.py            # full run (a few minutes on 2 idle cores)
    python benchmarks/ddp.py --quick    # smoke run
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

import torch  # noqa: E402
import yaml  # noqa: E402


def manifest(quick: bool) -> dict[str, Any]:
    # The full run searches on Fashion-MNIST (28x28) with a supernet whose step is worth
    # distributing; on 8x8 digits and a 4-channel cell a step is a few milliseconds and
    # the per-step round trips are all there is to measure.
    task = ({"type": "digits", "val_fraction": 0.5, "limit_train": 256, "limit_test": 50} if quick else
            {"type": "fashion_mnist", "val_fraction": 0.5, "limit_train": 2048, "limit_test": 100})
    return {
        "name": "ddp-bench",
        "seed": 0,
        "task": task,
        "space": {"type": "nb201", "C": 4 if quick else 16, "N": 1, "retrain_C": 4, "retrain_N": 1},
        "strategy": {"type": "darts", "epochs": 1 if quick else 2, "batch_size": 64, "arch_lr": 0.01},
        "train": {"epochs": 0},
        "backend": {"type": "cpu", "threads": 1},
        "export": {"type": "onnx"},
    }


def run(m: Path, out: Path, nproc: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "dnas_core", "run", str(m), "--out", str(out)]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    env = {**os.environ, "DNAS_PROGRESS": "0", "DNAS_DIST_BACKEND": "gloo"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"dnas run --nproc {nproc} failed:\n{proc.stderr[-3000:]}")
    state = json.loads((out / "state.json").read_text())
    summary = json.loads((out / "search_summary.json").read_text())
    ckpt = torch.load(out / "checkpoints" / "search.pt", map_location="cpu", weights_only=True)
    alpha = {k: v for k, v in ckpt["net"].items() if k.endswith("alpha")}
    return {"search_s": state["seconds"]["search"], "wall_s": time.perf_counter() - t0,
            "genotype": json.loads((out / "genotype.json").read_text()).get("text"),
            "rank_diff": summary.get("data_parallel", {}).get("max_arch_difference_between_ranks"), "alpha": alpha}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    spec = manifest(args.quick)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="dnas-ddp-bench-") as tmp:
        m = Path(tmp) / "m.yaml"
        m.write_text(yaml.safe_dump(spec))
        m_local = Path(tmp) / "m_local_bn.yaml"
        m_local.write_text(yaml.safe_dump({**spec, "strategy": {**spec["strategy"], "sync_batch_norm": False}}))
        m_nchw = Path(tmp) / "m_nchw.yaml"
        m_nchw.write_text(yaml.safe_dump({**spec, "backend": {**spec["backend"], "channels_last": False}}))
        for r in range(repeats):
            one = run(m, Path(tmp) / f"one-{r}", 1)
            two = run(m, Path(tmp) / f"two-{r}", 2)
            local = run(m_local, Path(tmp) / f"local-{r}", 2)
            ref = run(m_nchw, Path(tmp) / f"nchw-{r}", 1) if r == 0 else None
            # Examples through the search: the weights' half of limit_train, full batches only.
            n_train = spec["task"]["limit_train"] // 2
            samples = (n_train - n_train % spec["strategy"]["batch_size"]) * spec["strategy"]["epochs"]
            diff = max(float((one["alpha"][k] - two["alpha"][k]).abs().max()) for k in one["alpha"])
            if ref is not None:
                rounding_ref = max(float((one["alpha"][k] - ref["alpha"][k]).abs().max()) for k in one["alpha"])
            rounds.append({"samples": samples, "one_samples_s": samples / one["search_s"],
                           "two_samples_s": samples / two["search_s"], "speedup": one["search_s"] / two["search_s"],
                           "local_bn_samples_s": samples / local["search_s"],
                           "local_bn_speedup": one["search_s"] / local["search_s"],
                           "local_bn_max_diff_between_ranks": local["rank_diff"],
                           "max_alpha_diff_1_vs_2": diff, "max_diff_between_ranks": two["rank_diff"],
                           "same_genotype": one["genotype"] == two["genotype"],
                           "one_search_s": one["search_s"], "two_search_s": two["search_s"]})
            print(f"  round {r + 1}/{repeats}: 1 proc {one['search_s']:.1f} s, 2 procs {two['search_s']:.1f} s, "
                  f"2 procs with per-rank batch norm {local['search_s']:.1f} s",
                  file=sys.stderr, flush=True)
    med = {k: statistics.median(r[k] for r in rounds) for k in
           ("one_samples_s", "two_samples_s", "speedup", "local_bn_samples_s", "local_bn_speedup",
            "local_bn_max_diff_between_ranks", "max_alpha_diff_1_vs_2", "max_diff_between_ranks")}
    same = all(r["same_genotype"] for r in rounds)
    med["rounding_reference_nchw_vs_channels_last"] = rounding_ref
    print(f"\nDARTS supernet search, data-parallel with gloo ({spec['space']['C']} channels, global batch "
          f"{spec['strategy']['batch_size']}, {spec['strategy']['epochs']} epoch(s); medians of {repeats}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    print(f"{'processes':>9} {'samples/s':>10} {'speed-up':>9}")
    print(f"{1:>9} {med['one_samples_s']:>10.1f} {1.0:>9.2f}")
    print(f"{'2':>9} {med['two_samples_s']:>10.1f} {med['speedup']:>9.2f}   global batch norm (sync_batch_norm: true)")
    print(f"{'2':>9} {med['local_bn_samples_s']:>10.1f} {med['local_bn_speedup']:>9.2f}   per-rank batch norm "
          f"(sync_batch_norm: false; max diff between ranks {med['local_bn_max_diff_between_ranks']:.2e})")
    print(f"max |alpha_2proc - alpha_1proc|: {med['max_alpha_diff_1_vs_2']:.2e}; "
          f"max diff between ranks: {med['max_diff_between_ranks']:.2e}; same genotype in every round: {same}")
    print(f"rounding reference, 1 process NCHW vs channels-last: max |alpha diff| {rounding_ref:.2e}")
    out = ROOT / "benchmarks" / "results" / ("ddp_quick.json" if args.quick else "ddp.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "ddp", "quick": args.quick, "manifest": spec, "medians": med,
                               "same_genotype": same, "rounds": rounds,
                               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                           "load_average_end": os.getloadavg(), "torch": torch.__version__}},
                              indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
