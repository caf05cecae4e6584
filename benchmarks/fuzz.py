"""Fuzzing figures: inputs tried per data-file parser and per manifest loader, and how
each ended (accepted, a clear DnasError naming the file, or an unclear failure: any
other exception, a DnasError without the file name, or a hang over 5 s).

Inputs are drawn by hypothesis: random bytes and mutations (bit flips, truncations,
insertions, byte edits) of one valid sample of each format; manifests are random YAML
documents over the real keys, truncations of a valid manifest and random text.

    python benchmarks/fuzz.py            # 1,000 inputs per parser and 1,000 manifests
    python benchmarks/fuzz.py --quick    # 100 each
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

from dnas_core.testing.fuzzing import FuzzStats, FuzzTarget, default_targets, fuzz_target  # noqa: E402


def manifest_target() -> tuple[FuzzTarget, object]:
    """The manifest loader as a parser, with the YAML-aware strategy of the tests."""
    import yaml
    from hypothesis import strategies as st

    from dnas_core import get_plugin_manager
    from dnas_core.manifest import load_manifest

    pm = get_plugin_manager()
    sample = (ROOT / "tests" / "data" / "reports" / "mini.yaml").read_bytes()
    keys = ["name", "seed", "task", "space", "strategy", "train", "backend", "export", "callbacks", "output",
            "type", "epochs", "lr", "batch_size", "digits", "nb201", "darts", "C", "N", "version"]
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(), st.text(max_size=12),
                        st.sampled_from(["digits", "nb201", "darts", "cpu", "onnx", "csv"]))
    values = st.recursive(scalars, lambda k: st.one_of(st.lists(k, max_size=4),
                                                       st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), k, max_size=5)),
                          max_leaves=20)
    docs = st.one_of(st.dictionaries(st.sampled_from(keys), values, max_size=8).map(lambda d: yaml.safe_dump(d).encode()),
                     st.integers(0, len(sample)).map(lambda n: sample[:n]), st.binary(max_size=200))
    return FuzzTarget("manifest (YAML)", ".yaml", lambda p: load_manifest(p, pm.registries), sample), docs


def fuzz_manifests(n: int, seed: int) -> FuzzStats:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    from dnas_core.testing.fuzzing import check_input

    target, docs = manifest_target()
    stats = FuzzStats(target.name)
    with tempfile.TemporaryDirectory() as tmp:
        @hseed(seed)
        @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(docs)
        def run(data: bytes) -> None:
            check_input(target, data, Path(tmp), stats)

        run()
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (100 inputs each)")
    ap.add_argument("-n", type=int, default=None, help="inputs per parser")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n = args.n or (100 if args.quick else 1000)
    rows = []
    for target in default_targets():
        t0 = time.perf_counter()
        s = fuzz_target(target, n, seed=args.seed)
        rows.append({**s.as_dict(), "seconds": round(time.perf_counter() - t0, 1)})
    t0 = time.perf_counter()
    s = fuzz_manifests(n, args.seed)
    rows.append({**s.as_dict(), "seconds": round(time.perf_counter() - t0, 1)})
    print("| parser | inputs tried | accepted | clear errors | unclear failures |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['parser']} | {r['inputs_tried']} | {r['accepted']} | {r['clear_errors']} | {r['unclear_failures']} |")
    total = sum(r["inputs_tried"] for r in rows)
    unclear = sum(r["unclear_failures"] for r in rows)
    print(f"\ntotal: {total} inputs, {unclear} unclear failures")
    for r in rows:
        for ex in r["examples"]:
            print(f"  {r['parser']}: {ex}")
    out = ROOT / "benchmarks" / "results" / ("fuzz_quick.json" if args.quick else "fuzz.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"inputs_per_parser": n, "seed": args.seed, "total_inputs": total,
                               "unclear_failures": unclear, "parsers": rows}, indent=2) + "\n")
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
