"""``train(cfg, data)``: a training run as a generator of events.

The vocabulary follows fastai's callbacks and minGPT's trainer: ``BatchEnd`` and ``EpochEnd``
while it runs, then exactly one of ``Finished`` or ``Diverged``. Core never sees a widget: a
consumer stops a run by no longer iterating, or by setting the ``stop`` event it passed in
(checked between batches).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core import accel, models, tasks
from core import device as devices
from core.config import RunConfig
from core.data import augment
from core.data.dataset import ImageData
from core.models import catalog
from core.models.base import Classifier, InputSpec, one_view
from core.schema import validate

# Images per forward pass when evaluating. Small enough that cnn_bn's largest activation
# (19 MB) stays under glibc's 32 MB mmap limit and is reused (devices.keep_freed_memory);
# at 2048 each scoring of the 10,000 test images faulted in 160,000-300,000 fresh pages and
# took longer (figures: README, Benchmarks).
EVAL_BATCH = 512


@dataclass
class BatchEnd:
    epoch: int  # 1-based
    batch: int  # 1-based within the epoch
    batches: int  # per epoch
    step: int  # global optimizer step, 1-based
    loss: float  # mean training loss since the previous BatchEnd
    accuracy: float  # training accuracy since the previous BatchEnd (NaN for autoencoders)
    lr: float
    images_per_second: float  # training images per second so far (validation excluded)
    eta_seconds: float  # until the last epoch ends, at the current speed


@dataclass
class EpochEnd:
    epoch: int
    epochs: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float  # wall time of this epoch, validation included
    images_per_second: float
    eta_seconds: float
    improved: bool  # the validation loss is the best so far
    model: Classifier = field(repr=False)  # the live model: read it, do not train it
    val_top5_accuracy: float = math.nan  # true class among the 5 most probable (seed 003)


@dataclass
class Finished:
    model: Classifier = field(repr=False)  # best weights when early stopping restored them
    history: dict  # per-epoch lists (see History) plus a per-batch loss trace
    best_epoch: int  # epoch with the lowest validation loss
    stopped_early: bool  # early stopping ended the run before the last epoch
    stopped: bool  # the consumer asked it to stop
    wall_seconds: float
    images_per_second: float


@dataclass
class Diverged:
    epoch: int
    step: int
    loss: float
    history: dict
    reason: str


Event = BatchEnd | EpochEnd | Finished | Diverged


def build_model(cfg: RunConfig, data: ImageData) -> Classifier:
    return models.build(cfg.model, InputSpec.of(data))


def eval_batch(model) -> int:
    """Images per evaluation pass: ``EVAL_BATCH``, or fewer for a model that says so (a
    backbone's 224x224 photos)."""
    return getattr(model, "eval_batch", EVAL_BATCH)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1]."""
    return x.float().div_(255.0)


@torch.inference_mode()
def predict_logits(
    model: Classifier, images: np.ndarray | torch.Tensor, bf16: bool = False
) -> torch.Tensor:
    """Logits (N, classes) as float32 on the CPU, for uint8 images (N, C, H, W); for an
    autoencoder, its reconstructions (N, C, H, W)."""
    dev = next(model.parameters()).device
    x = torch.as_tensor(images)
    was_training = model.training
    model.eval()
    out, size = [], eval_batch(model)
    for i in range(0, len(x), size):  # an empty set gives an empty tensor
        batch = to_float(x[i : i + size].to(dev, non_blocking=True))
        with torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
            out.append(model(batch).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


def predict_proba(model: Classifier, images, bf16: bool = False) -> np.ndarray:
    """Class probabilities (N, classes) as a float32 numpy array."""
    return torch.softmax(predict_logits(model, images, bf16), dim=1).numpy()


def reconstruct(model: Classifier, images, bf16: bool = False) -> np.ndarray:
    """An autoencoder's reconstructions of uint8 images (N, C, H, W): float32 in [0, 1]."""
    return predict_logits(model, images, bf16).numpy()


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] -> uint8 (rounded, clipped)."""
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def reconstruction_mse(model: Classifier, images, bf16: bool = False) -> float:
    """Mean squared error between uint8 images and their reconstructions, pixels in [0, 1]."""
    out = torch.from_numpy(reconstruct(model, images, bf16))
    return F.mse_loss(out, to_float(torch.as_tensor(images))).item()


def _optimizer(cfg: RunConfig, model: Classifier) -> torch.optim.Optimizer:
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]  # a frozen encoder stays
    if t.optimizer in ("sgd", "nesterov"):
        nesterov = t.optimizer == "nesterov" and t.momentum > 0  # torch refuses it without
        return torch.optim.SGD(params, t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                               nesterov=nesterov)  # fmt: skip
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    # fused: one kernel for all parameters instead of a dozen small ops per tensor.
    return cls(params, t.lr, weight_decay=t.weight_decay, fused=True)


def _scheduler(cfg: RunConfig, opt: torch.optim.Optimizer, steps_per_epoch: int):
    """(scheduler or None, stepped "per_batch" | "per_epoch" | "on_val_loss")."""
    t = cfg.train
    total = t.epochs * steps_per_epoch
    if t.schedule == "onecycle" and total >= 3:  # shorter runs have no room to warm up
        # torch divides by (pct_start * total - 1): keep it away from zero (total == 4).
        pct = 0.25 if 0.25 * total != 1 else 2 / total
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, t.lr, total_steps=total, pct_start=pct)
        return sched, "per_batch"
    if t.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total), "per_batch"
    if t.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, t.step_size, t.gamma), "per_epoch"
    if t.schedule == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=t.gamma, patience=t.plateau_patience
        )
        return sched, "on_val_loss"
    return None, "never"


def _penalty(cfg: RunConfig, weights: list[torch.Tensor]) -> torch.Tensor | float:
    """L1 and L2 penalties over weight matrices and kernels (biases and norms excluded)."""
    t = cfg.train
    total: torch.Tensor | float = 0.0
    if t.l1:
        total = total + t.l1 * sum(w.abs().sum() for w in weights)
    if t.l2:
        total = total + t.l2 * sum(w.pow(2).sum() for w in weights)
    return total


def train(
    cfg: RunConfig,
    data: ImageData,
    stop: threading.Event | None = None,
    init: dict[str, torch.Tensor] | None = None,
) -> Iterator[Event]:
    """Train a fresh model for ``cfg`` on ``data``, yielding events; see the module doc.

    ``init``: starting weights for the model's ``body`` (an autoencoder's encoder for
    ``ae_classifier``; core.runs passes them), loaded strictly. With ``encoder_mode`` "frozen"
    the body then stays fixed and only the head trains.
    """
    validate(cfg)
    t = cfg.train
    devices.set_threads()
    dev = devices.pick(t.device)
    bf16 = devices.use_bf16(dev, t.bf16)
    torch.manual_seed(t.seed)
    gen = torch.Generator(device=dev).manual_seed(t.seed)

    model = build_model(cfg, data)
    if init is not None:
        model.body.load_state_dict(init, strict=True)
    starts = catalog.family(cfg.model.name).starts_from
    if starts is not None and getattr(cfg.model, starts.mode) == "frozen":
        model.body.requires_grad_(False)
    model = accel.accelerate(model.to(dev))  # CPU speed-ups (same weights)
    task = tasks.of(cfg.model.name)
    x_train = torch.from_numpy(data.x_train).to(dev)
    y_train = torch.from_numpy(data.y_train).to(dev)
    x_val = torch.from_numpy(data.x_val).to(dev)
    y_val = torch.from_numpy(data.y_val).to(dev)

    counts = data.class_counts()
    per_epoch = int((counts > 0).sum()) * int(counts.max()) if t.oversample else len(y_train)
    steps_per_epoch = math.ceil(per_epoch / t.batch_size)
    opt = _optimizer(cfg, model)
    sched, sched_when = _scheduler(cfg, opt, steps_per_epoch)
    weights = [p for p in model.parameters() if p.ndim > 1 and p.requires_grad]
    log_every = max(1, steps_per_epoch // 50)  # ~50 points per epoch for live curves
    blow_up = task.blow_up(data.num_classes)

    history = task.history()
    best_loss, best_epoch, best_state, patience = math.inf, 0, None, 0
    start = time.perf_counter()
    train_seconds = 0.0  # time in training steps only: images/s excludes validation
    seen, step, stopped, stopped_early = 0, 0, False, False

    for epoch in range(1, t.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        order = augment.epoch_order(y_train, t.oversample, gen)
        run_loss, run_correct, run_count = 0.0, torch.zeros((), device=dev), 0
        ep_loss, ep_correct, ep_count = 0.0, 0, 0
        for b, i in enumerate(range(0, len(order), t.batch_size), start=1):
            if stop is not None and stop.is_set():
                stopped = True
                break
            idx = order[i : i + t.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if t.jitter:
                xb = augment.jitter(xb, t.jitter, gen)
            if t.hflip:
                xb = augment.hflip(xb, gen)
            with torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
                xf = to_float(xb)
                out = model(xf)  # logits; an autoencoder's reconstruction
                loss = task.loss(out, xf, yb, t.label_smoothing)
            loss = loss + _penalty(cfg, weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lr = opt.param_groups[0]["lr"]  # the rate this step used
            if sched_when == "per_batch":
                sched.step()
            step += 1
            value = loss.item()  # one sync per step: divergence is caught at once
            if not math.isfinite(value) or value > blow_up:
                why = "not a number" if math.isnan(value) else f"{value:.3g}, far above chance"
                yield Diverged(epoch, step, value, history, f"training loss became {why}")
                return
            n = len(idx)
            seen += n
            run_loss += value * n
            if (correct := task.correct(out, yb)) is not None:
                run_correct += correct
            run_count += n
            if b % log_every == 0 or b == steps_per_epoch or step <= 2:  # a line at once
                correct = int(run_correct.item()) if task.has_accuracy else math.nan
                speed = seen / (train_seconds + time.perf_counter() - epoch_start)
                remaining = (t.epochs * steps_per_epoch - step) * t.batch_size
                history["batch_step"].append(step)
                history["batch_loss"].append(run_loss / run_count)
                yield BatchEnd(
                    epoch, b, steps_per_epoch, step, run_loss / run_count,
                    correct / run_count, lr, speed, remaining / speed,
                )  # fmt: skip
                ep_loss, ep_correct = ep_loss + run_loss, ep_correct + correct
                ep_count += run_count
                run_loss, run_correct, run_count = 0.0, torch.zeros((), device=dev), 0
        train_seconds += time.perf_counter() - epoch_start
        if stopped and ep_count == 0:
            break
        with one_view(model):  # a model answering for views of each image: one pass, not ten
            val_loss, val_acc, val_top5 = task.evaluate(model, x_val, y_val, bf16)
        if sched_when == "per_epoch":
            sched.step()
        elif sched_when == "on_val_loss":
            sched.step(val_loss)
        improved = val_loss < best_loss
        if improved:
            best_loss, best_epoch, patience = val_loss, epoch, 0
            if t.early_stopping:
                best_state = copy.deepcopy(model.state_dict())
        else:
            patience += 1
        seconds = time.perf_counter() - epoch_start
        row = {
            "epoch": epoch,
            "train_loss": ep_loss / ep_count,
            "train_accuracy": ep_correct / ep_count,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "val_top5_accuracy": val_top5,
            "lr": lr,
            "seconds": seconds,
        }
        for key in history.keys() & row.keys():
            history[key].append(row[key])
        speed = seen / train_seconds
        yield EpochEnd(
            epoch, t.epochs, row["train_loss"], row["train_accuracy"], val_loss, val_acc, lr,
            seconds, speed, (t.epochs - epoch) * steps_per_epoch * t.batch_size / speed,
            improved, model, val_top5,
        )  # fmt: skip
        if stopped:
            break
        if t.early_stopping and patience >= t.early_stopping and epoch < t.epochs:
            stopped_early = True
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    wall = time.perf_counter() - start
    speed = seen / train_seconds if train_seconds else 0.0
    yield Finished(model, history, best_epoch, stopped_early, stopped, wall, speed)
