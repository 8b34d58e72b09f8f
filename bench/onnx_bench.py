"""Inference latency: onnxruntime running a run's ONNX export against PyTorch running the run.

    .venv/bin/python bench/onnx_bench.py                          # cnn_bn, fast and mlp
    .venv/bin/python bench/onnx_bench.py --models efficientnet_lite0 --repeats 20

For each model: random weights (the latency does not depend on them) at Fashion-MNIST's
1x28x28 (a backbone at 3x96, upscaled to its resolution inside), exported with
``core.onnx_export.to_onnx`` and checked with ``compare``. Then the median wall time of one
image and of a batch of 256, each the median of ``--repeats`` calls after warm-up calls, in
PyTorch (``torch.inference_mode``, the app's thread count) and in onnxruntime (CPU provider,
its default threads). Both get float32 pixels in [0, 1]. Prints a table, then a JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

BATCHES = (1, 256)


def timed(call, repeats: int, warmup: int = 3) -> float:
    """Median seconds of ``call()`` over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, repeats: int) -> dict:
    import torch

    from core import device as devices
    from core import models
    from core import onnx_export as ox
    from core.config import ModelConfig
    from core.models.base import InputSpec

    devices.set_threads()
    backbone = "resolution" in models.get(name).options  # a pretrained body: photos
    spec = InputSpec(3, 96, 10, (0.5,) * 3, (0.25,) * 3) if backbone else InputSpec()
    token = models.PRETRAINED_WEIGHTS.set(False)
    try:
        model = models.build(ModelConfig(name), spec).eval()
    finally:
        models.PRETRAINED_WEIGHTS.reset(token)
    meta = {"run_id": "0" * 20, "model": name, "dataset": {"name": "bench"}, "test": {},
            "input": {"channels": spec.channels, "size": spec.size}}  # fmt: skip
    blob = ox.to_onnx(model, meta)
    session = ox.session(blob)
    rng = np.random.default_rng(0)
    row = {"model": name, "onnx_mb": round(len(blob) / 2**20, 2)}
    for batch in BATCHES:
        images = rng.integers(0, 256, (batch, spec.channels, spec.size, spec.size), np.uint8)
        check = ox.compare(model, blob, images)
        assert check.passed, (name, batch, check)
        pixels = images.astype(np.float32) / 255.0
        tensor = torch.from_numpy(pixels)

        def torch_call(x=tensor):
            with torch.inference_mode():
                model(x)

        def ort_call(x=pixels):
            session.run(None, {"images": x})

        row[f"torch_ms_{batch}"] = round(timed(torch_call, repeats) * 1000, 3)
        row[f"onnx_ms_{batch}"] = round(timed(ort_call, repeats) * 1000, 3)
        row[f"speedup_{batch}"] = round(row[f"torch_ms_{batch}"] / row[f"onnx_ms_{batch}"], 2)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="cnn_bn,fast,mlp")
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    rows = [measure(name, args.repeats) for name in args.models.split(",")]
    print(f"{'model':<20} {'1 image: torch':>15} {'onnxruntime':>12} {'x':>6} "
          f"{'256: torch':>12} {'onnxruntime':>12} {'x':>6}")  # fmt: skip
    for r in rows:
        print(f"{r['model']:<20} {r['torch_ms_1']:>12.2f} ms {r['onnx_ms_1']:>9.2f} ms "
              f"{r['speedup_1']:>5.2f}x {r['torch_ms_256']:>9.1f} ms {r['onnx_ms_256']:>9.1f} ms "
              f"{r['speedup_256']:>5.2f}x")  # fmt: skip
    print(json.dumps({"bench": "onnx_latency", "rows": rows}))


if __name__ == "__main__":
    main()
