"""One supernet search step (architecture update + weight update) for every
differentiable strategy registered in dnas, side by side with the reference
implementations a user would otherwise pick.

Configuration (issue 3): NAS-Bench-201 space, C=16, 5 cells per stage, batch 64,
32x32 inputs, 2 threads. The inputs are real Fashion-MNIST images padded to 32x32 and
repeated to 3 channels (``../shared/data/vision/fashion-mnist``), the same batches for
every implementation.

Every configuration runs in a fresh subprocess, so that its peak memory is its own:
``peak`` is the child's peak RSS (``getrusage``) when its last step has run (what an
implementation does after its search, such as dnas writing its report, is not the
step), ``extra`` that peak minus the RSS just before the supernet was built (data
loaded, libraries imported). The child times
``--warmup`` steps, then ``--steps`` steps, reports their median, counts the FLOPs of
one more step with ``torch.utils.flop_counter.FlopCounterMode`` and finally times a
4096^3 fp32 matmul in the same process (achieved GFLOP/s = step FLOPs / median time).

dnas strategies run through the real orchestrator (``dnas run`` path) on a task that
serves the batches above; the step is timed from the entry of the strategy's
``arch_step`` to the return of its ``weight_step``. The peers run in their own virtual
environment ``benchmarks/.venv-peers`` (created on first use; see
``../shared/PEERS.md``): AutoDL-Projects (``xautodl``) DARTS-V1, DARTS-V2 and GDAS with
the search step of its ``exps/NAS-Bench-201-algos`` scripts, and NNI 3.0's one-shot
DARTS driven by its Lightning evaluator (a callback times each training batch, which
is one architecture plus one weight step).

    python benchmarks/supernet_step.py            # full run (about 20 minutes on 2 cores)
    python benchmarks/supernet_step.py --quick    # smoke run: tiny supernet, no peers

This file imports only the standard library at module level: the peers' children run
it with the peers' interpreter, which has no dnas.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import ensure_peers_venv

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "supernet_step.json"
FMNIST = ROOT.parent / "shared" / "data" / "vision" / "fashion-mnist"
MATMUL_N = 4096

#: Goals of issue 3, checked on ratios measured in this run.
GOALS = {
    "darts_vs_nni": 2.0,
    "darts_vs_autodl": 2.0,
    "second_order_vs_autodl_v2": 2.0,
    "second_order_memory_vs_autodl_v2": 0.5,
    "gdas_vs_autodl": 1.5,
    "pc_darts_memory_vs_darts": 0.5,
    "dense_gflops_vs_matmul": 0.5,
}


# -- helpers shared by every child ------------------------------------------------------
def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def read_fmnist32(n: int, offset: int = 0):
    """``n`` Fashion-MNIST training images as float32 (n, 3, 32, 32) in [0, 1] and labels."""
    import numpy as np

    def idx(name):
        path = FMNIST / f"{name}.gz"
        if not path.exists():
            raise SystemExit(f"supernet_step: {path} not found (Fashion-MNIST IDX files are expected in {FMNIST})")
        with gzip.open(path, "rb") as f:
            data = f.read()
        ndim = data[3]
        dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)

    x = idx("train-images-idx3-ubyte")[offset : offset + n].astype(np.float32) / 255.0
    y = idx("train-labels-idx1-ubyte")[offset : offset + n].astype(np.int64)
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))[:, None].repeat(3, axis=1)
    return np.ascontiguousarray(x), y


def matmul_gflops(torch, n: int = MATMUL_N) -> float:
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times) / 1e9


class StepTimer:
    """Records step times; counts the FLOPs of the step after the timed ones."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self.times: list[float] = []
        self.n = 0
        self.t0 = 0.0
        self.flops = None
        self.peak_mb: float | None = None
        self._counter = None

    @property
    def counting(self) -> bool:
        return self.n == self.warmup + self.steps

    def start(self) -> None:
        if self.counting and self.flops is None:
            from torch.utils.flop_counter import FlopCounterMode

            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        dt = time.perf_counter() - self.t0
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops = self._counter.get_total_flops()
            self._counter = None
            # the peak of the stepping, before whatever the implementation does after its
            # search (dnas: derive, evaluate, write the report with its plots)
            self.peak_mb = peak_rss_mb()
        elif self.n >= self.warmup and len(self.times) < self.steps:
            self.times.append(dt)
        self.n += 1

    @property
    def done(self) -> bool:
        return self.flops is not None

    def needed(self) -> int:
        return self.warmup + self.steps + 1


def finish(result: dict, timer: StepTimer, torch, baseline_mb: float) -> dict:
    peak = timer.peak_mb if timer.peak_mb is not None else peak_rss_mb()
    result.update({
        "step_s": [round(t, 4) for t in timer.times],
        "median_s": statistics.median(timer.times) if timer.times else None,
        "peak_rss_mb": round(peak, 1),
        "extra_mb": round(peak - baseline_mb, 1),
        "flops": timer.flops,
    })
    result["matmul_gflops"] = round(matmul_gflops(torch, result.pop("matmul_n", MATMUL_N)), 1)
    if timer.flops and result["median_s"]:
        result["gflops"] = round(timer.flops / result["median_s"] / 1e9, 2)
    return result


# -- dnas child ---------------------------------------------------------------------------
def run_dnas(spec: dict) -> dict:
    import torch
    import yaml

    from dnas_core import hookimpl
    from dnas_core.orchestrator import run_manifest
    from dnas_core.plugin_manager import get_plugin_manager
    from dnas_plugins.strategies.differentiable import DifferentiableStrategy
    from dnas_tasks.vision.tasks import FashionMNISTTask

    torch.set_num_threads(spec["threads"])
    timer = StepTimer(spec["warmup"], spec["steps"])
    n_images = 2 * spec["batch"] * timer.needed()

    class FashionMNIST32(FashionMNISTTask):
        """The benchmark's batches: Fashion-MNIST padded to 32x32, 3 channels."""

        name = "fashion_mnist32_bench"

        def read(self):
            x, y = read_fmnist32(n_images)
            return x, y, x[:64], y[:64], [str(i) for i in range(10)]

    class BenchPlugin:
        @hookimpl
        def dnas_register_tasks(self):
            return [FashionMNIST32]

    pm = get_plugin_manager(extra_plugins=[BenchPlugin()])
    cls = pm.registries.strategies.get(spec["strategy"])
    if not issubclass(cls, DifferentiableStrategy):
        return {"skipped": f"{spec['strategy']} is not a supernet (differentiable) strategy"}

    state = {"baseline": None}
    space_cls = pm.registries.spaces.get("nb201")
    build = space_cls.build_supernet

    def build_supernet(self, task, **options):
        state["baseline"] = current_rss_mb()
        return build(self, task, **options)

    space_cls.build_supernet = build_supernet
    arch_step, weight_step = cls.arch_step, cls.weight_step

    def timed_arch_step(self, *args, **kwargs):
        timer.start()
        return arch_step(self, *args, **kwargs)

    def timed_weight_step(self, *args, **kwargs):
        out = weight_step(self, *args, **kwargs)
        timer.stop()
        return out

    cls.arch_step, cls.weight_step = timed_arch_step, timed_weight_step
    try:
        return _run_dnas_manifest(spec, timer, state, FashionMNIST32, pm, torch, yaml, run_manifest)
    finally:  # a --quick run times every strategy in one process
        cls.arch_step, cls.weight_step = arch_step, weight_step
        space_cls.build_supernet = build


def _run_dnas_manifest(spec, timer, state, task_cls, pm, torch, yaml, run_manifest) -> dict:
    manifest = {
        "name": "supernet_step_" + "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in spec["label"]),
        "seed": 0,
        "task": {"type": task_cls.name, "val_fraction": 0.5},
        "space": {"type": "nb201", "C": spec["C"], "N": spec["N"]},
        "strategy": {"type": spec["strategy"], "epochs": 1, "batch_size": spec["batch"], "eval_supernet": False,
                     "warmup_epochs": 0, **spec.get("options", {})},
        "train": {"epochs": 0},
        "backend": {"type": "cpu", "threads": spec["threads"]},
        "export": None,
    }
    from dnas_core import IncompatibleError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.yaml"
        path.write_text(yaml.safe_dump(manifest))
        os.environ.setdefault("DNAS_PROGRESS", "0")
        try:
            run_manifest(path, out=Path(tmp) / "run", pm=pm)
        except IncompatibleError as exc:  # e.g. ProxylessNAS needs the mobile space's binarised paths
            return {"label": spec["label"], "skipped": f"does not run on nb201: {exc}"}
    if not timer.done:
        raise SystemExit(f"{spec['label']}: only {timer.n} steps ran, {timer.needed()} needed")
    return finish({"label": spec["label"], "matmul_n": spec.get("matmul_n", MATMUL_N)}, timer, torch, state["baseline"])


# -- AutoDL-Projects child (peers' venv) --------------------------------------------------
def _flat(tensors):
    import torch

    return torch.cat([t.reshape(-1) for t in tensors])


def autodl_unrolled_arch_grad(net, criterion, w_opt, base, arch):
    """DARTS-V2's architecture gradient as AutoDL-Projects computes it
    (``exps/NAS-Bench-201-algos/DARTS-V2.py``): a deep copy of the network takes the
    virtual SGD step, then a finite-difference Hessian-vector product on the original."""
    import copy

    import torch

    weights, alphas = net.get_weights(), net.get_alphas()
    group = w_opt.param_groups[0]
    lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
    loss = criterion(net(base[0])[1], base[1])
    with torch.no_grad():
        theta = _flat(weights)
        try:
            moment = _flat([w_opt.state[p]["momentum_buffer"] for p in weights]).mul_(momentum)
        except KeyError:
            moment = torch.zeros_like(theta)
        dtheta = _flat(torch.autograd.grad(loss, weights)) + wd * theta
        theta_new = theta - lr * (moment + dtheta)
    unrolled = copy.deepcopy(net)
    state, offset = unrolled.state_dict(), 0
    for name, p in net.named_parameters():
        if "arch_parameters" in name:
            continue
        state[name] = theta_new[offset : offset + p.numel()].view(p.size())
        offset += p.numel()
    unrolled.load_state_dict(state)
    unrolled.zero_grad()
    criterion(unrolled(arch[0])[1], arch[1]).backward()
    d_alpha = unrolled.arch_parameters.grad
    vector = [p.grad for p in unrolled.get_weights()]
    r = 1e-2 / _flat(vector).norm()
    grads = []
    for sign in (1.0, -2.0):
        with torch.no_grad():
            for p, v in zip(weights, vector):
                p.add_(v, alpha=float(sign * r))
        grads.append(torch.autograd.grad(criterion(net(base[0])[1], base[1]), alphas)[0])
    with torch.no_grad():
        for p, v in zip(weights, vector):
            p.add_(v, alpha=float(r))
    d_alpha.sub_((grads[0] - grads[1]) / (2 * r), alpha=lr)
    net.arch_parameters.grad = d_alpha.clone()


def run_autodl(spec: dict) -> dict:
    import torch
    from xautodl.config_utils import dict2config
    from xautodl.models import get_cell_based_tiny_net
    from xautodl.models.cell_operations import SearchSpaceNames

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    timer = StepTimer(spec["warmup"], spec["steps"])
    b = spec["batch"]
    x, y = read_fmnist32(2 * b * timer.needed())
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    baseline = current_rss_mb()
    name = spec["algo"]
    net = get_cell_based_tiny_net(dict2config({
        "name": name, "C": spec["C"], "N": spec["N"], "max_nodes": 4, "num_classes": 10,
        "space": SearchSpaceNames["nas-bench-201"], "affine": False, "track_running_stats": True,
    }, None))
    if name == "GDAS":
        net.set_tau(10.0)
    # the optimisers of AutoDL's NAS-Bench-201 search configs
    w_opt = torch.optim.SGD(net.get_weights(), lr=0.025, momentum=0.9, weight_decay=5e-4, nesterov=True)
    a_opt = torch.optim.Adam(net.get_alphas(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    net.train()
    for step in range(timer.needed()):
        i = 2 * b * step
        base, arch = (x[i : i + b], y[i : i + b]), (x[i + b : i + 2 * b], y[i + b : i + 2 * b])
        timer.start()
        if name == "DARTS-V2":  # architecture first, then weights
            a_opt.zero_grad()
            autodl_unrolled_arch_grad(net, criterion, w_opt, base, arch)
            a_opt.step()
        w_opt.zero_grad()
        criterion(net(base[0])[1], base[1]).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5)
        w_opt.step()
        if name != "DARTS-V2":  # DARTS-V1 and GDAS: weights first, then architecture
            a_opt.zero_grad()
            criterion(net(arch[0])[1], arch[1]).backward()
            a_opt.step()
        timer.stop()
    return finish({"label": spec["label"]}, timer, torch, baseline)


# -- NNI child (peers' venv) ------------------------------------------------------------
def run_nni(spec: dict) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from pytorch_lightning import Callback
    from torch.utils.data import TensorDataset

    import nni.nas.strategy as strategy
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from nni.nas.experiment import NasExperiment
    from nni.nas.hub.pytorch import NasBench201

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    timer = StepTimer(spec["warmup"], spec["steps"])
    b = spec["batch"]
    n = b * timer.needed()
    x, y = read_fmnist32(2 * n)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    train = TensorDataset(x[:n], y[:n])
    val = TensorDataset(x[n:], y[n:])
    baseline = current_rss_mb()

    class Timing(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            timer.start()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            timer.stop()

    space = NasBench201(stem_out_channels=spec["C"], num_modules_per_stack=spec["N"], num_labels=10)
    evaluator = Classification(
        criterion=torch.nn.CrossEntropyLoss, learning_rate=0.025, weight_decay=3e-4,
        train_dataloaders=DataLoader(train, batch_size=b, shuffle=False),
        val_dataloaders=DataLoader(val, batch_size=b, shuffle=False),
        max_epochs=1, limit_train_batches=timer.needed(), limit_val_batches=0, num_sanity_val_steps=0,
        num_classes=10, accelerator="cpu", devices=1, callbacks=[Timing()], enable_progress_bar=False,
        enable_model_summary=False, logger=False, enable_checkpointing=False,
    )
    exp = NasExperiment(space, evaluator, strategy.DARTS())
    with tempfile.TemporaryDirectory() as tmp:
        exp.config.experiment_working_directory = tmp  # not ~/nni-experiments
        exp.run()
    if not timer.done:
        raise SystemExit(f"nni: only {timer.n} batches ran, {timer.needed()} needed")
    return finish({"label": spec["label"]}, timer, torch, baseline)


# -- parent -------------------------------------------------------------------------------
def run_child(python: str, spec: dict, timeout: float) -> dict:
    cmd = [python, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "DNAS_PROGRESS": "0"}
    if spec.get("omp_wait"):
        env["OMP_WAIT_POLICY"] = spec["omp_wait"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        return {"label": spec["label"], "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
    return {"label": spec["label"], "error": f"exit {proc.returncode}: " + " | ".join(tail)}


def dnas_configs() -> list[tuple[str, str, dict]]:
    """(label, strategy, options) for every registered differentiable strategy, plus
    second-order DARTS."""
    from dnas_core import get_plugin_manager
    from dnas_plugins.strategies.differentiable import DifferentiableStrategy

    pm = get_plugin_manager()
    out = []
    for name in pm.registries.strategies.list():
        cls = pm.registries.strategies.get(name)
        if not issubclass(cls, DifferentiableStrategy):
            continue
        out.append((f"dnas {name}", name, {}))
        if name == "darts" and "order" in cls.Config.model_fields:
            out.append(("dnas darts (2nd order)", name, {"order": "second"}))
    skipped = [n for n in pm.registries.strategies.list() if not issubclass(pm.registries.strategies.get(n), DifferentiableStrategy)]
    return out, skipped


def ratio_rows(results: dict[str, dict]) -> list[dict]:
    def get(label, key):
        r = results.get(label) or {}
        return r.get(key)

    rows = []

    def add(name, goal_key, value, text):
        goal = GOALS[goal_key]
        ok = None if value is None else (value <= goal if "memory" in goal_key else value >= goal)
        rows.append({"comparison": name, "value": None if value is None else round(value, 3), "goal": goal,
                     "goal_met": ok, "what": text})

    def speed(a, b):  # how many times faster a is than b
        ta, tb = get(a, "median_s"), get(b, "median_s")
        return tb / ta if ta and tb else None

    def mem(a, b):  # a's peak extra memory as a share of b's
        ma, mb = get(a, "extra_mb"), get(b, "extra_mb")
        return ma / mb if ma and mb else None

    add("dnas DARTS vs NNI DARTS, speed", "darts_vs_nni", speed("dnas darts", "NNI DARTS"), "x faster (goal >= 2)")
    m = mem("dnas darts", "NNI DARTS")
    rows.append({"comparison": "dnas DARTS vs NNI DARTS, memory", "value": None if m is None else round(m, 3),
                 "goal": 1.0, "goal_met": None if m is None else m <= 1.0, "what": "share of peak extra memory (goal <= 1)"})
    add("dnas DARTS vs AutoDL DARTS-V1, speed", "darts_vs_autodl", speed("dnas darts", "AutoDL DARTS-V1"), "x faster (goal >= 2)")
    m = mem("dnas darts", "AutoDL DARTS-V1")
    rows.append({"comparison": "dnas DARTS vs AutoDL DARTS-V1, memory", "value": None if m is None else round(m, 3),
                 "goal": 1.0, "goal_met": None if m is None else m <= 1.0, "what": "share of peak extra memory (goal <= 1)"})
    add("dnas DARTS 2nd order vs AutoDL DARTS-V2, speed", "second_order_vs_autodl_v2",
        speed("dnas darts (2nd order)", "AutoDL DARTS-V2"), "x faster (goal >= 2)")
    add("dnas DARTS 2nd order vs AutoDL DARTS-V2, memory", "second_order_memory_vs_autodl_v2",
        mem("dnas darts (2nd order)", "AutoDL DARTS-V2"), "share of peak extra memory (goal <= 0.5)")
    add("dnas GDAS vs AutoDL GDAS, speed", "gdas_vs_autodl", speed("dnas gdas", "AutoDL GDAS"), "x faster (goal >= 1.5)")
    add("dnas PC-DARTS (K=4) vs dnas DARTS, memory", "pc_darts_memory_vs_darts", mem("dnas pc_darts", "dnas darts"),
        "share of peak extra memory (goal <= 0.5)")
    g, mm = get("dnas darts", "gflops"), get("dnas darts", "matmul_gflops")
    add("dnas DARTS step GFLOP/s vs matmul GFLOP/s", "dense_gflops_vs_matmul", g / mm if g and mm else None,
        "share of the same process's matmul (goal >= 0.5)")
    return rows


def print_tables(results: dict[str, dict], rows: list[dict], cfg: dict, log) -> None:
    log(f"\nsupernet step, NAS-Bench-201 C={cfg['C']} N={cfg['N']} batch {cfg['batch']} 32x32, {cfg['threads']} threads, "
        f"median of {cfg['steps']} steps after {cfg['warmup']} warm-up; load average {cfg['load_average_at_start']}, "
        f"OMP_WAIT_POLICY={cfg['omp_wait'] or 'default'}")
    head = f"{'implementation':34s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'peak MB':>8s} {'extra MB':>9s} " \
           f"{'GFLOP':>7s} {'GFLOP/s':>8s} {'matmul':>7s}"
    log(head)
    log("-" * len(head))
    for label, r in results.items():
        if "error" in r or "skipped" in r:
            log(f"{label:34s} {r.get('error') or r.get('skipped')}")
            continue
        f = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
        log(f"{label:34s} {f(r['median_s'], 3):>9s} {f(min(r['step_s']), 3):>7s} {f(max(r['step_s']), 3):>7s} "
            f"{f(r['peak_rss_mb'], 0):>8s} {f(r['extra_mb'], 0):>9s} {f((r['flops'] or 0) / 1e9, 1):>7s} "
            f"{f(r.get('gflops'), 1):>8s} {f(r['matmul_gflops'], 0):>7s}")
    log("\nratios measured in this run")
    for row in rows:
        v = "n/a" if row["value"] is None else f"{row['value']:.2f}"
        met = {True: "met", False: "NOT met", None: "-"}[row["goal_met"]]
        log(f"  {row['comparison']:50s} {v:>6s}  {row['what']:48s} {met}")


def main(argv: list[str] | None = None) -> int:
    global RESULTS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: C=4, N=1, batch 16, 3 steps, no peers")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 7; quick 3)")
    ap.add_argument("--C", type=int, default=None, help="supernet width (default 16, the issue's configuration)")
    ap.add_argument("--N", type=int, default=None, help="cells per stage (default 5)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 64)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of every child (default 2; quick 1)")
    ap.add_argument("--out", default=str(RESULTS), help="results JSON (default benchmarks/results/supernet_step.json)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 1)")
    ap.add_argument("--only", default="", help="comma-separated labels (substring match) to run")
    ap.add_argument("--no-peers", action="store_true", help="skip the peers (AutoDL, NNI)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the configurations already in the results JSON and add (or replace) those run now")
    ap.add_argument("--omp-wait", choices=["auto", "active", "passive"], default="auto",
                    help="OMP_WAIT_POLICY of every child; auto: passive when the load average exceeds the CPU count "
                    "(spinning OpenMP threads on an oversubscribed machine make 2-thread steps 5-15x slower)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        spec = json.loads(args.child)
        runner = {"dnas": run_dnas, "autodl": run_autodl, "nni": run_nni}[spec["impl"]]
        result = runner(spec)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    quick = args.quick
    RESULTS = Path(args.out).resolve()
    cfg = {"C": args.C or (4 if quick else 16), "N": args.N or (1 if quick else 5),
           "batch": args.batch or (16 if quick else 64), "threads": args.threads or (1 if quick else 2),
           "steps": args.steps or (3 if quick else 7), "warmup": args.warmup if args.warmup is not None else 1}
    load = os.getloadavg()[0]
    wait = args.omp_wait if args.omp_wait != "auto" else ("passive" if load > (os.cpu_count() or 1) else None)
    cfg["omp_wait"] = wait.upper() if wait else None
    cfg["matmul_n"] = 1024 if quick else MATMUL_N
    cfg["load_average_at_start"] = round(load, 2)

    def log(msg=""):
        print(msg, flush=True)

    configs, skipped = dnas_configs()
    plan = [(label, "dnas", {"strategy": s, "options": o}) for label, s, o in configs]
    python_peers = None
    if quick or args.no_peers:
        log("peers (AutoDL, NNI) skipped: " + ("--quick" if quick else "--no-peers"))
    else:
        python_peers = ensure_peers_venv(log)
        if python_peers is None:
            log("peers skipped: their environment could not be built (see above)")
    if python_peers is not None:
        plan += [("AutoDL DARTS-V1", "autodl", {"algo": "DARTS-V1"}), ("AutoDL DARTS-V2", "autodl", {"algo": "DARTS-V2"}),
                 ("AutoDL GDAS", "autodl", {"algo": "GDAS"}), ("NNI DARTS", "nni", {})]
    # the configurations the ratios need first, so that a cut-short run still has them
    key = ["dnas darts", "dnas gdas", "dnas pc_darts", "AutoDL DARTS-V1", "AutoDL GDAS", "NNI DARTS",
           "dnas darts (2nd order)", "AutoDL DARTS-V2"]
    plan.sort(key=lambda p: key.index(p[0]) if p[0] in key else len(key))
    if args.only:
        keys = [k.strip().lower() for k in args.only.split(",") if k.strip()]
        plan = [p for p in plan if any(k in p[0].lower() for k in keys)]
    for name in skipped:
        log(f"strategy {name!r}: not a supernet strategy, no search step to time")

    results: dict[str, dict] = {}
    if args.merge and RESULTS.exists() and not quick:
        previous = json.loads(RESULTS.read_text())
        kept = {k: v for k, v in previous.get("results", {}).items() if k not in {p[0] for p in plan}}
        results.update(kept)
        log(f"merging with {len(kept)} configurations of {RESULTS.name} measured earlier: {', '.join(kept)}")
    t_start = time.time()
    for label, impl, extra in plan:
        spec = {**cfg, **extra, "label": label, "impl": impl}
        python = sys.executable if impl == "dnas" else str(python_peers)
        t0 = time.time()
        if quick:  # in-process: fast, but peak memory is the whole run's, not the configuration's
            try:
                results[label] = run_dnas(spec)
                if "peak_rss_mb" in results[label]:  # one process for all: its memory is nobody's own
                    results[label]["peak_rss_mb"] = results[label]["extra_mb"] = None
            except Exception as exc:  # noqa: BLE001 - report and go on with the next strategy
                results[label] = {"label": label, "error": f"{type(exc).__name__}: {exc}"}
        else:
            results[label] = run_child(python, spec, timeout=1800)
        r = results[label]
        status = r.get("error") or r.get("skipped") or f"median {r['median_s']:.3f} s, extra {r['extra_mb'] or 0:.0f} MB"
        log(f"  {label}: {status} ({time.time() - t0:.0f} s)")
        if not quick:  # keep what is measured so far
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps({"config": cfg, "results": results, "partial": True}, indent=2))
    rows = ratio_rows(results)
    print_tables(results, rows, cfg, log)
    log(f"\ntotal {time.time() - t_start:.0f} s")
    if not quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        payload = {"config": cfg, "results": results, "ratios": rows, "goals": GOALS,
                   "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                   "load_average": os.getloadavg()}
        RESULTS.write_text(json.dumps(payload, indent=2))
        log(f"wrote {RESULTS}")
    else:
        out = RESULTS.with_name("supernet_step_quick.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"config": cfg, "results": results, "ratios": rows}, indent=2))
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
