"""ONNX export with a dynamic batch axis, a full ``onnx.checker`` pass and an
onnxruntime comparison on real test inputs.

Two torch exporters are offered: the TorchScript-based one (``dynamo: false``, the
default: about 15x faster to export these networks, same graph) and the
torch.export/dynamo one (``dynamo: true``, uses onnxscript).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from dnas_core import ComponentConfig, Exporter, RunFailed, hookimpl


class OnnxConfig(ComponentConfig):
    opset: int = Field(17, ge=11, le=23)
    dynamo: bool = Field(False, description="use the torch.export-based exporter instead of TorchScript")
    atol: float = Field(1e-4, gt=0, description="max abs difference against torch that counts as verified")


def _names(example: Any) -> list[str]:
    if isinstance(example, (tuple, list)):
        return [f"input{i}" for i in range(len(example))]
    return ["input"]


def _as_tuple(x: Any) -> tuple[torch.Tensor, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


class OnnxExporter(Exporter):
    """Export to ONNX and verify with onnxruntime."""

    name = "onnx"
    description = "ONNX file, checked with onnx.checker and verified against onnxruntime"
    Config = OnnxConfig
    suffix = ".onnx"

    def export(self, model: nn.Module, example: Any, path: Path) -> dict[str, Any]:
        import onnx

        model = model.cpu().eval().to(memory_format=torch.contiguous_format)
        args = tuple(t.contiguous() for t in _as_tuple(example))
        inputs = _names(example)
        t0 = time.perf_counter()
        tmp = path.with_name(f".{path.name}.tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.config.dynamo:
                batch = torch.export.Dim("batch", min=1)
                torch.onnx.export(
                    model, args, str(tmp), dynamo=True, opset_version=self.config.opset, input_names=inputs,
                    output_names=["output"], dynamic_shapes=tuple({0: batch} for _ in args), external_data=False,
                )
            else:
                torch.onnx.export(
                    model, args, str(tmp), dynamo=False, opset_version=self.config.opset, input_names=inputs,
                    output_names=["output"],
                    dynamic_axes={**{n: {0: "batch"} for n in inputs}, "output": {0: "batch"}},
                )
        seconds = time.perf_counter() - t0
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as exc:  # noqa: BLE001
            tmp.unlink(missing_ok=True)
            raise RunFailed(f"{path.name}: onnx.checker rejected the exported model: {exc}") from exc
        tmp.replace(path)
        graph = onnx.load(str(path)).graph
        return {"opset": self.config.opset, "nodes": len(graph.node), "export_seconds": round(seconds, 3),
                "bytes": path.stat().st_size, "dynamo": self.config.dynamo}

    def verify(self, path: Path, model: nn.Module, inputs: Any) -> dict[str, Any]:
        import onnxruntime as ort

        model = model.cpu().eval()
        args = tuple(t.contiguous() for t in _as_tuple(inputs))
        with torch.no_grad():
            expected = model(*args).float().numpy()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args, strict=True)}
        got = sess.run(None, feeds)[0]
        if got.shape != expected.shape:
            return {"ok": False, "max_abs_diff": float("inf"), "error": f"shape {got.shape} != {expected.shape}"}
        diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)))) if got.size else 0.0
        # A batch of a different size proves the batch axis is really dynamic.
        one = {k: v[:1] for k, v in feeds.items()}
        dyn_ok = sess.run(None, one)[0].shape[0] == 1
        return {"ok": bool(diff <= self.config.atol and dyn_ok), "max_abs_diff": diff, "dynamic_batch": dyn_ok,
                "onnxruntime": ort.__version__}


@hookimpl
def dnas_register_exporters():
    return [OnnxExporter]
