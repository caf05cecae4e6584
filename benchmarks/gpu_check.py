"""GPU readiness check of the supernet step (a few minutes on one GPU).

Runs a first-order DARTS search step (architecture update with the weights frozen,
then weight update with the logits frozen, as the strategies' shared loop does) on
CUDA through dnas's ``cuda`` backend, for

* the quickstart size: NAS-Bench-201 C=8, N=1 on scikit-learn's digits (8x8), batch 64;
* the ``supernet_step`` size: NAS-Bench-201 C=16, N=5, batch 64, 32x32 inputs (digits
  upsampled to 32x32, 3 channels; no download);

each in fp32, bf16 autocast, and both again under ``torch.compile``. It prints the
median step time of each variant, its speed-up over fp32 eager, the peak GPU memory
and the number of host-device synchronisations one step triggers (counted with
``torch.cuda.set_sync_debug_mode``). On a machine without CUDA it says so and exits 0.

    python benchmarks/gpu_check.py [--steps 10] [--no-compile] [--space darts]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_check.json"


def digits_batches(size: int, channels: int, batch: int, n_batches: int, device: torch.device):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.repeat(1, channels, 1, 1)
    need = 2 * batch * n_batches
    reps = -(-need // len(x))
    x, y = x.repeat(reps, 1, 1, 1)[:need].to(device), y.repeat(reps)[:need].to(device)
    return [((x[i : i + batch], y[i : i + batch]), (x[i + batch : i + 2 * batch], y[i + batch : i + 2 * batch]))
            for i in range(0, need, 2 * batch)]


class Stem(nn.Sequential):
    def __init__(self, c_in: int, c: int):
        super().__init__(nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))


class Head(nn.Module):
    def __init__(self, c: int, classes: int = 10):
        super().__init__()
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


def build(space_name: str, C: int, N: int, c_in: int):
    from dnas_core import Network, get_plugin_manager

    pm = get_plugin_manager()
    if space_name == "nb201":
        from dnas_search_spaces.nb201.space import NB201Body

        body = NB201Body(C, N)
        stem_c = C
    else:
        from dnas_search_spaces.darts.space import DARTSBody

        body = DARTSBody(C, N)
        stem_c = 3 * C
    return pm, Network(Stem(c_in, stem_c), body, Head(body.out_channels))


def make_step(net, backend):
    arch = net.body.arch_parameters()
    ids = {id(p) for p in arch}
    weights = [p for p in net.parameters() if id(p) not in ids]
    w_opt = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(arch, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step(batch_w, batch_a):
        for p in weights:
            p.requires_grad_(False)
        a_opt.zero_grad(set_to_none=True)
        with backend.autocast():
            loss = loss_fn(net(batch_a[0]).float(), batch_a[1])
        loss.backward()
        a_opt.step()
        for p in weights:
            p.requires_grad_(True)
        for p in arch:
            p.requires_grad_(False)
        w_opt.zero_grad(set_to_none=True)
        with backend.autocast():
            loss = loss_fn(net(batch_w[0]).float(), batch_w[1])
        loss.backward()
        nn.utils.clip_grad_norm_(weights, 5.0)
        w_opt.step()
        for p in arch:
            p.requires_grad_(True)
        return loss.detach()

    return step


def count_syncs(step, batches) -> int:
    """Host-device synchronisations in one step (warnings of the sync debug mode)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(*batches)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def run_variant(space: str, size: dict, amp: str, compile_: bool, steps: int, warmup: int) -> dict:
    torch.manual_seed(0)
    pm, net = build(space, size["C"], size["N"], size["channels"])
    backend = pm.registries.backends.create("cuda", {"amp": amp, "compile": compile_})
    backend.setup()
    net = backend.prepare(net).train()
    batches = [tuple((backend.prepare_input(x), y) for x, y in pair)
               for pair in digits_batches(size["hw"], size["channels"], size["batch"], warmup + steps + 1, backend.device)]
    step = make_step(net, backend)
    torch.cuda.reset_peak_memory_stats(backend.device)
    t0 = time.perf_counter()
    for b in batches[:warmup]:
        step(*b)
    backend.synchronize()
    warm_s = time.perf_counter() - t0
    times = []
    for b in batches[warmup : warmup + steps]:
        t = time.perf_counter()
        step(*b)
        backend.synchronize()
        times.append(time.perf_counter() - t)
    syncs = count_syncs(step, batches[-1])
    return {"median_ms": statistics.median(times) * 1e3, "warmup_s": warm_s, "syncs_per_step": syncs,
            "peak_mem_mb": torch.cuda.max_memory_allocated(backend.device) / 2**20}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    ap.add_argument("--space", choices=["nb201", "darts"], default="nb201")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False); nothing to check.")
        return 0
    print(f"gpu_check on {torch.cuda.get_device_name()} (torch {torch.__version__}, space {args.space})")
    sizes = {
        "quickstart (C=8, N=1, 8x8, batch 64)": {"C": 8, "N": 1, "hw": 8, "channels": 1, "batch": 64},
        "supernet_step (C=16, N=5, 32x32, batch 64)": {"C": 16, "N": 5 if args.space == "nb201" else 8, "hw": 32,
                                                       "channels": 3, "batch": 64},
    }
    variants = [("off", False), ("bf16", False)] + ([] if args.no_compile else [("off", True), ("bf16", True)])
    report = {}
    for size_name, size in sizes.items():
        print(f"\n{size_name}")
        print(f"  {'variant':22s} {'median ms':>10s} {'speed-up':>9s} {'warm-up s':>10s} {'syncs/step':>11s} {'peak MB':>8s}")
        base = None
        for amp, comp in variants:
            name = f"{'fp32' if amp == 'off' else amp}{' + compile' if comp else ''}"
            try:
                r = run_variant(args.space, size, amp, comp, args.steps, args.warmup)
            except Exception as exc:  # noqa: BLE001 - report every variant
                print(f"  {name:22s} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
                report[f"{size_name} / {name}"] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            base = base or r["median_ms"]
            print(f"  {name:22s} {r['median_ms']:10.2f} {base / r['median_ms']:8.2f}x {r['warmup_s']:10.1f} "
                  f"{r['syncs_per_step']:11d} {r['peak_mem_mb']:8.0f}")
            report[f"{size_name} / {name}"] = r
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"device": torch.cuda.get_device_name(), "results": report}, indent=2))
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
