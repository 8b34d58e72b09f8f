"""How resnet_mini was chosen: its shape against the variants we tried, one training each.

    .venv/bin/python bench/resnet_variants.py --variant S --epochs 14
    .venv/bin/python bench/resnet_variants.py --variant BR --epochs 18 --lr 0.2

Each variant trains with the ``best`` preset's recipe (SGD with Nesterov momentum, one-cycle
learning rate, weight decay 5e-4, label smoothing 0.1, 1-pixel shifts and flips, bf16 on
CPUs that have it, core.accel's speed-ups) on the 50,000-image training split, validated on
the other 10,000 each epoch, in a loop of its own (this file), then scores the test set
with the image alone, with its mirror averaged in, and with ten views (models.resnet).
Prints one JSON line per epoch and one at the end. One at a time: the machine has 2 cores.

    A   conv 32 at 28x28, conv 32 + pool, conv 64 + pool, residual 64, conv 128 + pool,
        residual 128 (the first sketch)
    B   conv 32 + pool, conv 64 + pool, residual 64, conv 128 + pool, residual 128
    BC  B with a plain conv 32 after the first pool
    BR  B with a residual pair 32 after the first pool
    S   BR with a stride-2 conv instead of conv + pool at 28x28: resnet_mini
    S5  S with a 5x5 stride-2 conv
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

START = time.perf_counter()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import accel  # noqa: E402
from core import data as datasets  # noqa: E402
from core.config import DataConfig  # noqa: E402
from core.data import augment  # noqa: E402
from core.device import pick, set_threads, use_bf16  # noqa: E402
from core.models.base import InputSpec  # noqa: E402
from core.models.cnn import strided_block  # noqa: E402
from core.models.resnet import Residual, ViewAveraged, conv_bn, stage  # noqa: E402

VARIANTS = {
    "A": lambda: [*conv_bn(1, 32), *stage(32, 32), *stage(32, 64), Residual(64),
                  *stage(64, 128), Residual(128)],
    "B": lambda: [*stage(1, 32), *stage(32, 64), Residual(64), *stage(64, 128), Residual(128)],
    "BC": lambda: [*stage(1, 32), *conv_bn(32, 32), *stage(32, 64), Residual(64),
                   *stage(64, 128), Residual(128)],
    "BR": lambda: [*stage(1, 32), Residual(32), *stage(32, 64), Residual(64), *stage(64, 128),
                   Residual(128)],
    "S": lambda: [*strided_block(1, 32), Residual(32), *stage(32, 64), Residual(64),
                  *stage(64, 128), Residual(128)],
    "S5": lambda: [*strided_block(1, 32, 5), Residual(32), *stage(32, 64), Residual(64),
                   *stage(64, 128), Residual(128)],
}  # fmt: skip


def build(name: str, spec: InputSpec) -> ViewAveraged:
    body = nn.Sequential(*VARIANTS[name](), nn.AdaptiveMaxPool2d(1), nn.Flatten())
    model = ViewAveraged(spec, body, nn.Linear(128, spec.num_classes))
    return model.to(memory_format=torch.channels_last)


@torch.inference_mode()
def accuracy(model: ViewAveraged, x, y, views, dev, bf16: bool) -> float:
    """Test accuracy answering for ``views`` (a list of ViewAveraged.views entries)."""
    model.eval()
    correct = 0
    for i in range(0, len(x), 500):
        xb = x[i : i + 500].to(dev).float().div_(255)
        with torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
            logits = sum(model.head(model.features(model.view(xb, v))).float() for v in views)
        correct += int((logits.argmax(1).cpu() == y[i : i + 500]).sum())
    model.train()
    return correct / len(y)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--variant", default="S", choices=sorted(VARIANTS))
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--jitter", type=int, default=1,
                   help="shift each image by up to N pixels (the best preset: 1)")  # fmt: skip
    p.add_argument(
        "--zero-init",
        action="store_true",
        help="each residual pair starts as the identity (its last BatchNorm scale 0)",
    )
    p.add_argument("--ema", type=float, default=0.0,
                   help="also score a moving average of the weights and BatchNorm statistics "
                   "with this decay per step (0: none)")  # fmt: skip
    args = p.parse_args()
    set_threads()
    dev = pick("auto")
    bf16 = use_bf16(dev)
    torch.manual_seed(args.seed)
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    data = datasets.load(DataConfig())
    x, y = torch.from_numpy(data.x_train).to(dev), torch.from_numpy(data.y_train).long().to(dev)
    xv, yv = torch.from_numpy(data.x_val), torch.from_numpy(data.y_val).long()
    xt, yt = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test).long()
    model = build(args.variant, InputSpec.of(data))
    if args.zero_init:
        for m in model.modules():
            if isinstance(m, Residual):
                nn.init.zeros_(m.f[4].weight)  # conv, BN, ReLU, conv, BN, ReLU
    model = accel.accelerate(model.to(dev))
    steps = args.epochs * math.ceil(len(y) / args.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)  # fmt: skip
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps, pct_start=0.25)
    one = [model.views[0]]
    average = copy.deepcopy(model) if args.ema else None
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        order = torch.randperm(len(y), generator=gen, device=dev)
        for i in range(0, len(y), args.batch_size):
            idx = order[i : i + args.batch_size]
            xb = augment.hflip(augment.jitter(x[idx], args.jitter, gen), gen).float().div_(255)
            with torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(xb).float(), y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if average is not None:
                with torch.no_grad():
                    for a, b in zip(average.state_dict().values(), model.state_dict().values(),
                                    strict=True):  # fmt: skip
                        if a.is_floating_point():
                            a.lerp_(b, 1 - args.ema)
                        else:
                            a.copy_(b)
        seconds = time.perf_counter() - t0
        val = accuracy(model, xv, yv, one, dev, bf16)
        print(json.dumps({"epoch": epoch, "train_seconds": round(seconds, 1), "val": val,
                          "wall": round(time.perf_counter() - START, 1)}), flush=True)  # fmt: skip
    mirror = [model.views[0], model.views[len(model.views) // 2]]
    print(json.dumps({
        "variant": args.variant, "zero_init": args.zero_init, "epochs": args.epochs,
        "seed": args.seed, "lr": args.lr, "jitter": args.jitter, "batch_size": args.batch_size,
        "device": dev.type, "bf16": bf16,
        "parameters": sum(p.numel() for p in model.parameters()),
        "test_one_view": accuracy(model, xt, yt, one, dev, bf16),
        "test_flip_averaged": accuracy(model, xt, yt, mirror, dev, bf16),
        "test_ten_views": accuracy(model, xt, yt, list(model.views), dev, bf16),
        "wall": round(time.perf_counter() - START, 1),
    }))  # fmt: skip
    if average is not None:
        print(json.dumps({"ema": args.ema,
                          "test_one_view": accuracy(average, xt, yt, one, dev, bf16),
                          "test_ten_views": accuracy(average, xt, yt, list(model.views), dev,
                                                     bf16)}))  # fmt: skip


if __name__ == "__main__":
    main()
