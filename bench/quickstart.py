"""The baseline we measure against: the PyTorch-quickstart style training loop.

The seed papers' models written as a tutorial reader would (not our registry's tuned
versions), trained the quickstart way:

torchvision's FashionMNIST dataset with ``ToTensor`` (a PIL image per item), a DataLoader at
batch 64 (or the recipe's own batch), float32, Adam. Our numbers are ratios against this
loop run on the same machine in the same minute (bench/speed.py runs both).

    python bench/quickstart.py throughput --model cnn_bn
    python bench/quickstart.py time-to-accuracy --model cnn_small --batch-size 32 --target 0.90
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import ToTensor

from core.bench import process_seconds
from core.data import fashion_mnist


def torchvision_root() -> Path:
    """A folder laid out as torchvision expects (FashionMNIST/raw/*-ubyte), offline."""
    source = fashion_mnist.find()
    if source is None:
        sys.exit("Fashion-MNIST not found: run make setup")
    root = Path(tempfile.gettempdir()) / "cnn-classroom-quickstart"
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in fashion_mnist.FILES.values():
        target = raw / name.removesuffix(".gz")
        if not target.exists():
            with gzip.open(source / name) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return root


def loaders(batch_size: int) -> tuple[DataLoader, DataLoader]:
    root = str(torchvision_root())
    train = datasets.FashionMNIST(root, train=True, download=False, transform=ToTensor())
    test = datasets.FashionMNIST(root, train=False, download=False, transform=ToTensor())
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True),
        DataLoader(test, batch_size=batch_size),
    )


class Seed000CNN(nn.Module):
    """Seed 000's CNN as a tutorial reader writes it: conv -> BN -> ReLU -> pool, twice."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(12, 24, 3), nn.BatchNorm2d(24), nn.ReLU(), nn.MaxPool2d(2, 2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(864, 600), nn.ReLU(), nn.Dropout(0.4),
            nn.Linear(600, 100), nn.ReLU(), nn.Dropout(0.4), nn.Linear(100, 10),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(self.features(x))


class Seed002CNN(nn.Module):
    """Seed 002's Keras model translated line by line."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(0.5), nn.Flatten(),
            nn.Linear(64 * 5 * 5, 50), nn.ReLU(), nn.Linear(50, 50), nn.ReLU(),
            nn.Linear(50, 10),
        )  # fmt: skip

    def forward(self, x):
        return self.net(x)


BASELINES = {"cnn_bn": Seed000CNN, "cnn_small": Seed002CNN}


def model_for(name: str) -> nn.Module:
    if name not in BASELINES:
        sys.exit(f"no baseline for {name}; choose from {', '.join(BASELINES)}")
    return BASELINES[name]()


def train_epoch(model, loader, loss_fn, optimizer, max_batches=None) -> tuple[int, float]:
    """The quickstart's ``train`` loop. Returns (images, seconds) after a 10-batch warm-up."""
    model.train()
    images, t0 = 0, None
    for batch, (x, y) in enumerate(loader):
        if batch == 10:
            t0, images = time.perf_counter(), 0
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        images += len(y)
        if max_batches and batch + 1 >= max_batches:
            break
    return images, time.perf_counter() - t0


def test_accuracy(model, loader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


def throughput(model_name: str, batch_size: int, batches: int | None) -> dict:
    torch.manual_seed(0)
    train_loader, _ = loaders(batch_size)
    model = model_for(model_name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, seconds = train_epoch(model, train_loader, nn.CrossEntropyLoss(), opt, batches)
    return {"loop": "quickstart", "model": model_name, "batch_size": batch_size,
            "images_per_second": images / seconds, "threads": torch.get_num_threads()}  # fmt: skip


def time_to_accuracy(model_name: str, batch_size: int, target: float, max_epochs: int) -> dict:
    start = time.perf_counter()
    torch.manual_seed(0)
    train_loader, test_loader = loaders(batch_size)
    model = model_for(model_name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    accuracy, epoch = 0.0, 0
    for epoch in range(1, max_epochs + 1):
        train_epoch(model, train_loader, nn.CrossEntropyLoss(), opt)
        accuracy = test_accuracy(model, test_loader)
        print(f"epoch {epoch}: test accuracy {accuracy:.4f}", file=sys.stderr)
        if accuracy >= target:
            break
    return {"loop": "quickstart", "model": model_name, "batch_size": batch_size,
            "target": target, "reached": accuracy >= target, "test_accuracy": accuracy,
            "epochs": epoch, "seconds": time.perf_counter() - start,
            "process_seconds": process_seconds()}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    tp = sub.add_parser("throughput")
    tp.add_argument("--model", default="cnn_bn")
    tp.add_argument("--batch-size", type=int, default=64)
    tp.add_argument("--batches", type=int, default=None, help="stop after N (default: 1 epoch)")
    ta = sub.add_parser("time-to-accuracy")
    ta.add_argument("--model", default="cnn_small")
    ta.add_argument("--batch-size", type=int, default=32)
    ta.add_argument("--target", type=float, default=0.90)
    ta.add_argument("--max-epochs", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    if args.what == "throughput":
        result = throughput(args.model, args.batch_size, args.batches)
    else:
        result = time_to_accuracy(args.model, args.batch_size, args.target, args.max_epochs)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
