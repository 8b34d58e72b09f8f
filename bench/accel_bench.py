"""core.accel against the plain model and against ``torch.compile``, on this machine's CPU.

    .venv/bin/python bench/accel_bench.py                 # cnn_bn and fast, 3 rounds
    .venv/bin/python bench/accel_bench.py --models fast --rounds 5

Training images per second at batch 256 on Fashion-MNIST-sized tensors (60,000 random uint8
images of 1x28x28, ten classes), the trainer's step: a random batch gathered by index,
scaled to [0, 1], forward, cross-entropy, backward, fused Adam. Three ways: ``plain`` (the
model as core.models builds it), ``accel`` (``core.accel.accelerate``, as the trainer
runs it) and ``compile`` (``torch.compile`` of the plain model, Inductor's default mode);
compile's first steps (the compilation) are timed apart. Every (model, way) runs in its own
process, the ways interleaved round by round (the machine's speed drifts); the figure is
the median over the rounds. Prints a table, then a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WAYS = ("plain", "accel", "compile")
BATCH = 256
WARMUP, STEPS = 5, 60  # steps before timing (compile: these include the compilation), timed


def one(model_name: str, way: str) -> dict:
    """Train ``model_name`` the ``way`` way in this process: images/s and compile seconds."""
    import torch
    import torch.nn.functional as F

    from core import accel, models
    from core import device as devices
    from core.config import ModelConfig
    from core.models.base import InputSpec

    devices.set_threads()
    torch.manual_seed(0)
    x_all = torch.randint(0, 256, (60_000, 1, 28, 28), dtype=torch.uint8)
    y_all = torch.randint(0, 10, (60_000,))
    model = models.build(ModelConfig(model_name), InputSpec()).train()
    if way == "accel":
        accel.warm()
        model = accel.accelerate(model)
    opt = torch.optim.Adam(model.parameters(), 1e-3, fused=True)
    run = torch.compile(model) if way == "compile" else model

    def step() -> None:
        idx = torch.randint(0, len(x_all), (BATCH,))
        xb = x_all[idx].float().div_(255)
        loss = F.cross_entropy(run(xb), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()  # compile: the compilation happens here
    first = time.perf_counter() - t0
    for _ in range(WARMUP - 1):
        step()
    t0 = time.perf_counter()
    for _ in range(STEPS):
        step()
    seconds = time.perf_counter() - t0
    per_step = seconds / STEPS
    return {"model": model_name, "way": way, "images_per_second": BATCH * STEPS / seconds,
            "first_step_seconds": first, "compile_seconds": max(0.0, first - per_step),
            "threads": torch.get_num_threads(), "torch": torch.__version__}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=["cnn_bn", "fast"])
    p.add_argument("--ways", nargs="+", default=list(WAYS), choices=WAYS)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--one", nargs=2, metavar=("MODEL", "WAY"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(*args.one)))
        return

    results: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.rounds):
        for name in args.models:
            for way in args.ways:
                cmd = [sys.executable, __file__, "--one", name, way]
                out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                if out.returncode != 0:
                    tail = (out.stderr.strip().splitlines() or ["?"])[-1]
                    result = {"model": name, "way": way, "error": tail}
                else:
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault((name, way), []).append(result)
                done = result.get("images_per_second")
                print(f"round {r + 1}: {name:7s} {way:8s} "
                      + (f"{done:8,.0f} img/s" if done else result["error"]),
                      file=sys.stderr)  # fmt: skip

    print(f"\ntraining images/s, batch {BATCH}, median of {args.rounds} rounds "
          f"({STEPS} timed steps each)")  # fmt: skip
    print(f"{'model':8s} {'way':8s} {'images/s':>9s} {'vs plain':>8s} {'compile s':>9s}")
    summary = {}
    for name in args.models:
        plain = None
        for way in args.ways:
            runs = [x for x in results[(name, way)] if "images_per_second" in x]
            if not runs:
                print(f"{name:8s} {way:8s} failed: {results[(name, way)][-1]['error']}")
                summary[f"{name}/{way}"] = {"error": results[(name, way)][-1]["error"]}
                continue
            ips = statistics.median(x["images_per_second"] for x in runs)
            compile_s = statistics.median(x["compile_seconds"] for x in runs)
            plain = ips if way == "plain" else plain
            ratio = f"{ips / plain:.2f}x" if plain else "-"
            shown = f"{compile_s:9.1f}" if way == "compile" else f"{'-':>9s}"
            print(f"{name:8s} {way:8s} {ips:9,.0f} {ratio:>8s} {shown}")
            rounds = [x["images_per_second"] for x in runs]
            summary[f"{name}/{way}"] = {"images_per_second": ips, "compile_seconds": compile_s,
                                        "rounds": rounds}  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
