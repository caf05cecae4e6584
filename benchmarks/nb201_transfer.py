"""Search quality of the differentiable family on NAS-Bench-201, via transfer.

Every strategy searches the NAS-Bench-201 cell space on a subset of Fashion-MNIST
(``../shared/data/vision/fashion-mnist``) for several seeds; the derived cell is looked
up in the benchmark's table (``../shared/data/nas/nas-bench-201-test-accuracy.csv``),
which gives the test accuracy that cell reaches when trained for 200 epochs on
CIFAR-10, CIFAR-100 and ImageNet16-120. Printed per strategy: mean and standard
deviation over seeds of those accuracies, the rank of the cell among all 15,625, the
collapse share (parameter-free operations in the derived cell) and the search time,
next to DARTS's collapsed all-skip cell (54.30 % on CIFAR-10) and the optimum (94.37 %).

The per-search budget is set by ``--epochs`` and ``--limit-train`` (and the supernet
size ``--C``/``--N``). The search batches are augmented as in DARTS's reference search
(``strategy.augment: both``, random crop after 4 pixels of padding and a horizontal
flip; ``--augment none`` searches on raw batches). The defaults (20 epochs on 4,000
images, C=8, N=1) take 3-4 minutes per search on one core; the committed JSON ran them
with two searches at a time (the full table of 10 strategies x 3 seeds in about 67
minutes):

    python benchmarks/nb201_transfer.py --quick          # smoke run, < 1 minute
    python benchmarks/nb201_transfer.py --jobs 2 --threads 1
    python benchmarks/nb201_transfer.py --jobs 2 --threads 1 --selection perturbation   # 87 minutes

``--selection perturbation`` reads each cell off its supernet by DARTS-PT (``strategy.
selection``; GDAS, which samples paths, keeps magnitude) and writes
``benchmarks/results/nb201_transfer_pt.json``.

``--peers`` adds the reference implementations a user would otherwise pick,
AutoDL-Projects' GDAS and DARTS-V1 (``xautodl`` in ``benchmarks/.venv-peers``, built on
first use as for ``supernet_step.py``), each run by its own search loop and optimiser
settings on the very split, budget and augmentation the dnas searches get, and writes
``benchmarks/results/nb201_transfer_peers.json``:

    python benchmarks/nb201_transfer.py --peers --jobs 2 --threads 1 --strategies "darts (1st order)" gdas GDAS DARTS-V1

Writes the same figures to ``benchmarks/results/nb201_transfer.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_peers.py
DATA = ROOT / ".." / "shared" / "data"

#: (label, strategy config). Learning rates and schedules are each method's defaults.
STRATEGIES: list[tuple[str, dict]] = [
    ("darts (1st order)", {"type": "darts"}),
    ("darts (2nd order)", {"type": "darts", "order": "second"}),
    ("gdas", {"type": "gdas"}),
    ("snas", {"type": "snas"}),
    ("pc_darts (K=4)", {"type": "pc_darts", "partial_channels": 4}),
    ("drnas", {"type": "drnas"}),
    ("beta_darts", {"type": "beta_darts"}),
    ("darts_minus", {"type": "darts_minus"}),
    ("fair_darts", {"type": "fair_darts"}),
    ("sdarts_rs", {"type": "sdarts_rs"}),
]
COLLAPSED_C10, OPTIMUM_C10 = 54.30, 94.37


def task_section(args: argparse.Namespace) -> dict:
    """The manifest's task: Fashion-MNIST, half of the images for the weights and half
    for the architecture (``val_fraction: 0.5``)."""
    return {"type": "fashion_mnist", "limit_train": args.limit_train, "limit_test": 100, "val_fraction": 0.5,
            "path": str(args.data / "vision" / "fashion-mnist"),
            **({"augment": {"crop_padding": args.crop_padding, "flip": args.flip}} if args.augment != "none" else {})}


def search_once(label: str, strategy: dict, seed: int, args: argparse.Namespace, workdir: Path) -> dict:
    """One search (no retraining): returns the derived cell and its table entry."""
    import yaml

    from dnas_core.orchestrator import Orchestrator

    manifest = {
        "name": "transfer-" + "".join(c if c.isalnum() else "-" for c in label) + f"-{seed}",
        "seed": seed,
        "task": task_section(args),
        "space": {"type": "nb201", "C": args.C, "N": args.N},
        "strategy": {**strategy, "epochs": args.epochs, "batch_size": args.batch_size, "eval_supernet": False,
                     **({"augment": args.augment} if args.augment != "none" else {}),
                     **({"selection": "perturbation"} if uses_perturbation(strategy, args) else {})},
        # A rare non-finite step is skipped (and counted) instead of failing the search.
        "train": {"epochs": 0, "divergence": "skip_step"},
        "backend": {"type": "cpu", "threads": args.threads},
    }
    path = workdir / f"{manifest['name']}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    orch = Orchestrator.new(path, out=workdir / manifest["name"])
    # Only the search stage is measured: the benchmark scores the derived cell by the
    # table, so retraining, export and the report are skipped.
    orch._start()
    t0 = time.perf_counter()
    orch._stage("search", orch.search)
    seconds = time.perf_counter() - t0
    genotype = json.loads((orch.run_dir.path / "genotype.json").read_text())
    from dnas_core import Genotype

    summary = json.loads((orch.run_dir.path / "search_summary.json").read_text())
    skipped = max([r.get("skipped_steps", 0) for r in orch.run_dir.metrics() if r.get("stage") == "search"], default=0)
    return cell_record(Genotype.from_json(genotype), seed, seconds, args, skipped_steps=skipped,
                       early_stop=summary.get("early_stop"),
                       selection=summary.get("selection", {}).get("method", "magnitude"))


def cell_record(g, seed: int, seconds: float, args: argparse.Namespace, **extra) -> dict:
    """What the table says of a derived cell, with its share of parameter-free edges."""
    from dnas_plugins.strategies.differentiable import collapse_metrics
    from dnas_search_spaces.nb201.table import load_table

    table = load_table(args.table)
    acc = table.lookup(g)
    return {"seed": seed, "arch": acc.arch, "cifar10": acc.cifar10, "cifar100": acc.cifar100,
            "imagenet16": acc.imagenet16, "cifar10_top_percent": table.percentile(acc.cifar10),
            **{k.split("/")[1]: v for k, v in collapse_metrics(g).items()},
            "search_seconds": round(seconds, 2), **extra}


# -- the reference implementations (AutoDL-Projects, in the peers' environment) -----------
#: (label, AutoDL-Projects model name). Their search loops (exps/NAS-Bench-201-algos/
#: GDAS.py, DARTS-V1.py) are run by :func:`peer_child` with the optimisers of their
#: configs (configs/nas-benchmark/algos/{GDAS,DARTS}.config).
PEERS: list[tuple[str, str]] = [
    ("AutoDL GDAS (ref.)", "GDAS"),
    ("AutoDL DARTS-V1 (ref.)", "DARTS-V1"),
]
#: Prefix of the child's result line on its stdout.
PEER_RESULT = "PEER-RESULT "


def peer_once(label: str, name: str, seed: int, args: argparse.Namespace, workdir: Path) -> dict:
    """One search by AutoDL-Projects' reference code (``args.peers_python``, the peers'
    environment) on the very split, budget and augmentation of :func:`search_once`, with
    the input normalisation of the dnas task's stem."""
    import subprocess

    import torch

    from dnas_core import get_plugin_manager

    registries = get_plugin_manager().registries
    section = task_section(args)
    task = registries.tasks.create(section.pop("type"), section)
    data = task.data(seed)

    def stack(split):
        xs, ys = zip(*(split[i] for i in range(len(split))), strict=True)
        return torch.stack(xs), torch.as_tensor(ys)

    path = workdir / f"split-{name}-{seed}.pt"
    (xt, yt), (xv, yv) = stack(data.train), stack(data.val)
    torch.save({"xt": xt, "yt": yt, "xv": xv, "yv": yv, "mean": task._mean, "std": task._std}, path)
    spec = {"name": name, "data": str(path), "seed": seed, "epochs": args.epochs, "C": args.C, "N": args.N,
            "batch_size": args.batch_size, "threads": args.threads, "augment": args.augment,
            "crop_padding": args.crop_padding, "flip": args.flip}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run([args.peers_python, str(Path(__file__).resolve()), "--peer-child", json.dumps(spec)],
                          capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(PEER_RESULT)]
    if proc.returncode or not lines:
        raise RuntimeError(f"{label} seed {seed}: the reference search failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len(PEER_RESULT):])
    space = registries.spaces.create("nb201", {"C": args.C, "N": args.N})
    return cell_record(space.from_string(out["arch"]), seed, out["seconds"], args, skipped_steps=0,
                       early_stop=None, selection="magnitude")


def peer_child(spec: dict) -> dict:
    """In the peers' environment: AutoDL-Projects' tiny NAS-Bench-201 supernet searched
    as its scripts do. Per step, GDAS.py and DARTS-V1.py both take a weight step on a
    training batch (gradients of all parameters clipped at norm 5) and then an
    architecture step on a validation batch drawn at random (their SearchDataset pairs
    each training example with a random validation one); GDAS's temperature falls
    linearly from 10 to 0.1 over the epochs. Weights: SGD 0.025, Nesterov momentum 0.9,
    weight decay 5e-4, cosine to 0.001 over the epochs, set once per epoch as xautodl's
    scheduler does (its T_max is ``--epochs`` here instead of the configs' 240 / 50);
    architecture: Adam 3e-4, betas (0.5, 0.999), weight decay 1e-3. The derived cell is
    the supernet's ``genotype()``, the arg-max per edge. Inputs are normalised with the
    dnas task's statistics after augmentation, as the dnas stem does."""
    import math

    import torch
    from torch import nn
    from xautodl.config_utils import dict2config
    from xautodl.models import get_cell_based_tiny_net
    from xautodl.models.cell_operations import SearchSpaceNames

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])
    d = torch.load(spec["data"], weights_only=True)
    xt, yt, xv, yv = d["xt"], d["yt"], d["xv"], d["yv"]
    mean, std = d["mean"].view(1, -1, 1, 1), d["std"].view(1, -1, 1, 1)
    C, epochs, bs = spec["C"], spec["epochs"], spec["batch_size"]
    net = get_cell_based_tiny_net(dict2config({
        "name": spec["name"], "C": C, "N": spec["N"], "max_nodes": 4, "num_classes": int(yt.max()) + 1,
        "space": SearchSpaceNames["nas-bench-201"], "affine": False, "track_running_stats": True}, None))
    if xt.shape[1] != 3:  # the reference stem expects RGB: the same stem for the data's channels
        net.stem[0] = nn.Conv2d(xt.shape[1], C, 3, padding=1, bias=False)
    w_opt = torch.optim.SGD(net.get_weights(), lr=0.025, momentum=0.9, weight_decay=5e-4, nesterov=True)
    a_opt = torch.optim.Adam(net.get_alphas(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    criterion = nn.CrossEntropyLoss()
    pad = spec["crop_padding"]

    def augment(x: torch.Tensor) -> torch.Tensor:  # random crop after zero padding, horizontal flip
        n, _, h, w = x.shape
        if pad:
            padded = nn.functional.pad(x, (pad, pad, pad, pad))
            dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).tolist()
            dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).tolist()
            x = torch.stack([padded[i, :, a:a + h, b:b + w] for i, (a, b) in enumerate(zip(dy, dx, strict=True))])
        if spec["flip"]:
            flip = torch.rand(n, generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x

    def batch(x: torch.Tensor, augmented: bool) -> torch.Tensor:
        return ((augment(x) if augmented else x) - mean) / std

    t0 = time.perf_counter()
    for epoch in range(epochs):
        if spec["name"] == "GDAS":
            net.set_tau(10 - (10 - 0.1) * epoch / max(1, epochs - 1))
        lr = 0.001 + 0.5 * (0.025 - 0.001) * (1 + math.cos(math.pi * epoch / epochs))
        for group in w_opt.param_groups:
            group["lr"] = lr
        order = torch.randperm(len(xt), generator=gen)
        net.train()
        for s in range(0, len(xt), bs):  # the last, smaller batch too (the reference loader keeps it)
            bw = order[s:s + bs]
            ba = torch.randint(0, len(xv), (len(bw),), generator=gen)
            w_opt.zero_grad()
            criterion(net(batch(xt[bw], spec["augment"] != "none"))[1], yt[bw]).backward()
            nn.utils.clip_grad_norm_(net.parameters(), 5)
            w_opt.step()
            a_opt.zero_grad()
            criterion(net(batch(xv[ba], spec["augment"] == "both"))[1], yv[ba]).backward()
            a_opt.step()
    return {"arch": net.genotype().tostr(), "seconds": round(time.perf_counter() - t0, 2)}


def uses_perturbation(strategy: dict, args: argparse.Namespace) -> bool:
    """``--selection perturbation`` applies to the strategies that mix every operation;
    path-sampling ones (GDAS) keep magnitude selection."""
    if args.selection != "perturbation":
        return False
    from dnas_core import get_plugin_manager

    return not get_plugin_manager().registries.strategies.create(
        strategy["type"], {k: v for k, v in strategy.items() if k != "type"}).samples_paths


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 strategies, 1 seed, 1 epoch on 128 images")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20, help="search epochs (per-search budget)")
    ap.add_argument("--limit-train", type=int, default=4000, help="Fashion-MNIST images used (half train, half val)")
    ap.add_argument("--C", type=int, default=8, help="supernet width (NAS-Bench-201: 16)")
    ap.add_argument("--N", type=int, default=1, help="cells per stage (NAS-Bench-201: 5)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--augment", choices=["none", "weights", "both"], default="both",
                    help="strategy.augment: the task augmentation (random crop after padding, flip) on the search batches "
                         "of the weight step (weights) or of both steps (both, as DARTS's reference search)")
    ap.add_argument("--crop-padding", type=int, default=4, help="random crop after zero-padding by this many pixels")
    ap.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True, help="random horizontal flip")
    ap.add_argument("--selection", choices=["magnitude", "perturbation"], default="magnitude",
                    help="strategy.selection: how the cell is read off the supernet (perturbation: DARTS-PT; "
                         "strategies that sample paths, GDAS, keep magnitude)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per search")
    ap.add_argument("--jobs", type=int, default=1,
                    help="searches run at once, each in its own process (e.g. --jobs 2 --threads 1 on 2 cores)")
    ap.add_argument("--strategies", nargs="*", help="labels or types to run (default: all)")
    ap.add_argument("--data", type=Path, default=DATA, help="data root (default ../shared/data)")
    ap.add_argument("--table", type=Path, default=None, help="NAS-Bench-201 CSV (default: <data>/nas/...)")
    ap.add_argument("--peers", action="store_true",
                    help="also run AutoDL-Projects' reference GDAS and DARTS-V1 on the same split and budget (in "
                         "benchmarks/.venv-peers; writes nb201_transfer_peers.json)")
    ap.add_argument("--peer-child", help=argparse.SUPPRESS)  # internal: one reference search, in the peers' venv
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "nb201_transfer.json")
    args = ap.parse_args(argv)
    if args.peer_child:
        print(PEER_RESULT + json.dumps(peer_child(json.loads(args.peer_child))), flush=True)
        return 0
    if args.peers and args.out.name == "nb201_transfer.json":
        args.out = args.out.with_name("nb201_transfer_peers.json")
    if args.selection == "perturbation" and args.out.name == "nb201_transfer.json":
        args.out = args.out.with_name("nb201_transfer_pt.json")
    if args.quick:
        args.seeds, args.epochs, args.limit_train = 1, 1, 128
        if not args.strategies:
            args.strategies = ["darts (1st order)", "gdas", "beta_darts"] + (["GDAS"] if args.peers else [])
        if args.out.name in ("nb201_transfer.json", "nb201_transfer_pt.json", "nb201_transfer_peers.json"):
            args.out = args.out.with_name(args.out.stem + "_quick.json")
    args.table = args.table or args.data / "nas" / "nas-bench-201-test-accuracy.csv"
    os.environ.setdefault("DNAS_PROGRESS", "0")
    import torch

    torch.set_num_threads(args.threads)
    from dnas_search_spaces.nb201.table import load_table

    table = load_table(args.table)  # fail early, naming the path, if the table is missing
    candidates = STRATEGIES + ([(label, {"peer": name}) for label, name in PEERS] if args.peers else [])
    chosen = [(label, cfg) for label, cfg in candidates
              if not args.strategies or label in args.strategies or cfg.get("type", cfg.get("peer")) in args.strategies]
    if not chosen:
        ap.error(f"no strategy matches {args.strategies}; choose from {[lbl for lbl, _ in candidates]}")
    args.peers_python = None
    if any("peer" in cfg for _, cfg in chosen):  # built once, before any search starts
        from _peers import ensure_peers_venv

        python = ensure_peers_venv(lambda msg: print(msg, file=sys.stderr, flush=True))
        if python is None:
            sys.exit("the peers' environment could not be built (see above); run without --peers")
        args.peers_python = str(python)

    records: dict[str, list[dict]] = {label: [] for label, _ in chosen}
    t_all = time.perf_counter()
    # Seed-major order, with the table and JSON rewritten after every search: a run cut
    # short still covers every strategy. With --jobs N, N searches run at once in
    # separate processes of --threads threads each.
    work = [(label, cfg, seed) for seed in range(args.seeds) for label, cfg in chosen]

    def done(label: str, seed: int, rec: dict) -> None:
        records[label].append(rec)
        records[label].sort(key=lambda r: r["seed"])
        print(f"  {label:18s} seed {seed}: {rec['arch']}  CIFAR-10 {rec['cifar10']:.2f} %  "
              f"({rec['search_seconds']:.0f} s)", file=sys.stderr, flush=True)
        report(records, args, table, time.perf_counter() - t_all, final=False)

    with tempfile.TemporaryDirectory(prefix="dnas-transfer-") as tmp:
        if args.jobs == 1:
            for label, cfg, seed in work:
                done(label, seed, run_one(label, cfg, seed, args, Path(tmp)))
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                     initargs=(args.threads,)) as pool:
                futures = {pool.submit(run_one, label, cfg, seed, args, Path(tmp)): (label, seed)
                           for label, cfg, seed in work}
                for fut in as_completed(futures):
                    done(*futures[fut], fut.result())
    report(records, args, table, time.perf_counter() - t_all, final=True)
    return 0


def run_one(label: str, cfg: dict, seed: int, args: argparse.Namespace, workdir: Path) -> dict:
    """A dnas search, or a reference search when ``cfg`` names a peer."""
    if "peer" in cfg:
        return peer_once(label, cfg["peer"], seed, args, workdir)
    return search_once(label, cfg, seed, args, workdir)


def _worker_init(threads: int) -> None:
    import torch

    os.environ.setdefault("DNAS_PROGRESS", "0")
    torch.set_num_threads(threads)


def report(records: dict[str, list[dict]], args: argparse.Namespace, table, wall: float, final: bool) -> None:
    """Print (when final) and write the summary table of the searches done so far."""
    import torch

    records = {k: v for k, v in records.items() if v}
    summary = {}
    for label, recs in records.items():
        row = {}
        for key in ("cifar10", "cifar100", "imagenet16", "cifar10_top_percent", "param_free_share"):
            m, s = mean_std([r[key] for r in recs])
            row[key] = {"mean": round(m, 3), "std": round(s, 3)}
        row["collapsed_cells"] = sum(r["param_free_share"] >= 4 / 6 for r in recs)
        row["median_search_seconds"] = statistics.median(r["search_seconds"] for r in recs)
        row["skipped_steps"] = sum(r["skipped_steps"] for r in recs)
        summary[label] = row

    width = max([18, *map(len, summary)])
    random_mean = float(table.acc[:, 0].mean())
    n_seeds = max(len(v) for v in records.values())
    header = (f"NAS-Bench-201 transfer: search on Fashion-MNIST ({args.limit_train} images, {args.epochs} epochs, "
              f"C={args.C}, N={args.N}, batch {args.batch_size}, "
              + (f"augmented ({args.augment}: crop pad {args.crop_padding}{', flip' if args.flip else ''}), "
                 if args.augment != "none" else "no augmentation, ")
              + ("perturbation selection (DARTS-PT; gdas: magnitude), " if args.selection == "perturbation" else "")
              + f"{args.threads} thread(s) per search"
              + (f", {args.jobs} searches at a time" if args.jobs > 1 else "") + f"), {n_seeds} seed(s); "
              "table accuracy (%) of the derived cell, mean +- std over seeds")
    lines = [header, "",
             f"{'strategy':{width}s} {'CIFAR-10':>14s} {'CIFAR-100':>14s} {'ImageNet16':>14s} {'top % (C10)':>12s} "
             f"{'param-free':>11s} {'collapsed':>9s} {'search s':>9s}"]
    for label, row in summary.items():
        f = lambda k: f"{row[k]['mean']:6.2f} +- {row[k]['std']:4.2f}"  # noqa: E731
        lines.append(f"{label:{width}s} {f('cifar10'):>14s} {f('cifar100'):>14s} {f('imagenet16'):>14s} "
                     f"{row['cifar10_top_percent']['mean']:12.2f} {row['param_free_share']['mean']:11.2f} "
                     f"{row['collapsed_cells']:>5d}/{len(records[label]):<3d} {row['median_search_seconds']:9.1f}")
    lines += ["",
              f"reference: collapsed all-skip cell {COLLAPSED_C10:.2f} %, optimum {OPTIMUM_C10:.2f} %, "
              f"mean of all 15,625 cells {random_mean:.2f} % (CIFAR-10); top 3 % starts at "
              f"{float(sorted(table.acc[:, 0])[int(0.97 * len(table))]):.2f} %",
              "collapsed: >= 4 of the 6 edges parameter-free (skip, pool, none)",
              "non-finite steps skipped: " + (", ".join(f"{k} {v['skipped_steps']}" for k, v in summary.items()
                                                       if v["skipped_steps"]) or "none"),
              f"total wall time {wall:.0f} s" + ("" if final else " (incomplete: run still going)")]
    if final:
        print("\n".join(lines))

    out = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "complete": final, "wall_seconds": round(wall, 1), "table_text": lines,
           "reference": {"collapsed_darts_cifar10": COLLAPSED_C10, "optimum_cifar10": OPTIMUM_C10,
                         "mean_cell_cifar10": round(random_mean, 3)},
           "summary": summary, "runs": records, "torch": torch.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2))
    tmp.replace(args.out)


if __name__ == "__main__":
    sys.exit(main())
