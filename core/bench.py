"""Speed measurements behind ``python -m core bench``; each returns a JSON-ready dict."""

from __future__ import annotations

import os
import time
from dataclasses import replace

from core import data as datasets
from core.config import DataConfig, ModelConfig, RunConfig, TrainConfig


def process_seconds() -> float | None:
    """Seconds since this process started (Linux /proc), interpreter start-up included."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def throughput(model: str, batch_size: int, epochs: int = 2, bf16: str = "auto") -> dict:
    """Training images per second in steady state, on the real training loop and data.

    A short warm-up run pays one-off costs (allocations, oneDNN kernel selection). Then each
    epoch is timed from its first logged batch to its last, so validation is not counted.
    """
    from core.device import cores, pick, use_bf16
    from core.train import BatchEnd, train

    data = datasets.load(DataConfig())
    cfg = RunConfig(
        model=ModelConfig(model),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, bf16=bf16, schedule="constant"),
    )
    warm = replace(cfg, data=replace(cfg.data, train_limit=20 * batch_size))
    for _ in train(replace(warm, train=replace(warm.train, epochs=1)), datasets.load(warm.data)):
        pass
    images, seconds, first = 0, 0.0, {}
    for event in train(cfg, data):
        if not isinstance(event, BatchEnd):
            continue
        now = time.perf_counter()
        if event.epoch not in first:
            first[event.epoch] = (now, event.step)
        elif event.batch == event.batches:  # the epoch's last batch: close its window
            t0, step0 = first[event.epoch]
            images += (event.step - step0) * batch_size
            seconds += now - t0
    dev = pick("auto")
    return {
        "model": model,
        "batch_size": batch_size,
        "images_per_second": images / seconds,
        "timed_images": images,
        "timed_seconds": seconds,
        "device": dev.type,
        "bf16": use_bf16(dev, bf16),
        "threads": cores(),
    }


def time_to_accuracy(target: float, preset: str = "fast") -> dict:
    """Train ``preset`` from scratch (no store) until the test accuracy reaches ``target``.

    The test set is scored after every epoch; ``seconds`` counts data loading and training,
    ``process_seconds`` also the interpreter and torch start-up (a cold start).
    """
    import numpy as np

    from core import presets
    from core.train import EpochEnd, predict_proba, train

    start = time.perf_counter()
    cfg = presets.get(preset).config
    data = datasets.load(cfg.data)
    accuracy, epochs = 0.0, 0
    for event in train(cfg, data):
        if isinstance(event, EpochEnd):
            epochs = event.epoch
            accuracy = float((predict_proba(event.model, data.x_test).argmax(1) == data.y_test)
                             .mean())  # fmt: skip
            if accuracy >= target:
                break
    return {
        "preset": preset,
        "target": target,
        "reached": accuracy >= target,
        "test_accuracy": accuracy,
        "epochs": epochs,
        "seconds": time.perf_counter() - start,
        "process_seconds": process_seconds(),
        "dataset": data.name,
        "train_images": int(np.size(data.y_train)),
    }
