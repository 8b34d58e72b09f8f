"""Seed 001's study, re-run: issue 5's figures beside the paper's.

    .venv/bin/python bench/seed001_bench.py [--store DIR] [--epochs 10] [--classifier-epochs 15]

- Table 1: test MSE of the autoencoder for n = 64, 128, 256, 512 (p = 0.2, lr = 1e-3);
- the appendix: with and without pooling (n = 128, p = 0.1, lr = 1e-3);
- the classifier on the pooled encoder: fine-tuned, frozen and random encoders.

Every run goes through the store (a second call answers from it). The paper trained for 30
epochs; fewer keep a lesson short. Prints one line per figure and a JSON line last.
"""

from __future__ import annotations

import argparse
import json
import time

from core import seed001
from core.runs import Stored, train_or_load
from core.store import Store


def run(cfg, store: Store) -> dict:
    started = time.perf_counter()
    stored = next(e for e in train_or_load(cfg, store) if isinstance(e, Stored))
    meta = stored.meta
    return {"run_id": stored.run_id, "test": meta["test"], "seconds": time.perf_counter() - started,
            "images_per_second": meta["images_per_second"]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store", help="model store (default: the user's)")
    p.add_argument("--epochs", type=int, default=10, help="autoencoder epochs (paper: 30)")
    p.add_argument("--classifier-epochs", type=int, default=15, help="classifier epochs")
    args = p.parse_args()
    store = Store(args.store)
    result: dict = {"epochs": args.epochs, "classifier_epochs": args.classifier_epochs}

    table = {}
    for n, cfg in seed001.sweep("n", args.epochs):
        table[n] = run(cfg, store)
        print(f"Table 1, n = {n}: test MSE {table[n]['test']['mse']:.4f} "
              f"(paper {seed001.TABLE_1[n]:.3f}), {table[n]['seconds']:.0f} s")  # fmt: skip
    result["table_1"] = {n: r["test"]["mse"] for n, r in table.items()}

    pooled = {}
    for pooling in (True, False):
        pooled[pooling] = run(seed001.autoencoder(128, 0.1, 1e-3, pooling, args.epochs), store)
        print(f"appendix, pooling {pooling}: test MSE {pooled[pooling]['test']['mse']:.4f} "
              f"(paper {seed001.APPENDIX_MSE[pooling]:.3f}), "
              f"{pooled[pooling]['seconds']:.0f} s")  # fmt: skip
    result["appendix"] = {str(k): r["test"]["mse"] for k, r in pooled.items()}

    encoder = pooled[True]["run_id"]
    result["classifier"] = {}
    for mode in ("finetune", "frozen", "random"):
        r = run(seed001.classifier(encoder, mode, args.classifier_epochs), store)
        result["classifier"][mode] = r["test"]["accuracy"]
        print(f"classifier, {mode} encoder: test accuracy {r['test']['accuracy']:.4f} "
              f"(paper, fine-tuned: {seed001.CLASSIFIER_ACCURACY}), "
              f"{r['seconds']:.0f} s")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
