"""The trainer: events, stopping, divergence, optimizers, schedules, penalties, validation."""

from __future__ import annotations

import math
import platform
import resource
import sys
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import core.data as datasets
from core import UserError, accel
from core import device as devices
from core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from core.data import augment
from core.schema import FIELDS
from core.schema import validate as validate_config
from core.train import (
    BatchEnd,
    Diverged,
    EpochEnd,
    Finished,
    build_model,
    predict_logits,
    predict_proba,
    to_float,
    train,
)

DIGITS_64 = DataConfig(dataset="digits", val_size=100, train_limit=64)
DIGITS_256 = DataConfig(dataset="digits", val_size=100, train_limit=256)
QUICK = TrainConfig(
    epochs=2, batch_size=64, lr=1e-2, optimizer="adam", schedule="constant", bf16="off"
)


def config(data=DIGITS_256, model="mlp", **train_options) -> RunConfig:
    return RunConfig(data=data, model=ModelConfig(model), train=replace(QUICK, **train_options))


def run(cfg: RunConfig, stop=None) -> list:
    return list(train(cfg, datasets.load(cfg.data), stop))


def history_without_times(history: dict) -> dict:
    return {k: v for k, v in history.items() if k != "seconds"}


# -- learning -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["cnn_bn", "fast"])
def test_overfits_one_batch(model):
    cfg = config(DIGITS_64, model, epochs=30, batch_size=64, lr=3e-3)
    events = run(cfg)
    done = events[-1]
    assert isinstance(done, Finished)
    data = datasets.load(cfg.data)
    assert len(data.y_train) == 64
    assert done.history["train_accuracy"][-1] >= 0.98
    predicted = predict_proba(done.model, data.x_train).argmax(1)
    assert (predicted == data.y_train).mean() >= 0.98  # in eval mode too (BatchNorm stats)
    assert done.history["train_loss"][-1] < done.history["train_loss"][0] / 10


@pytest.mark.parametrize("model", ["cnn_bn", "cnn_small", "fast"])
def test_the_bf16_path_learns(model):
    """bf16="on" autocast on the CPU (what "auto" picks on CPUs with AVX512-BF16; PyTorch
    emulates it elsewhere): the whole loop, the fused kernels beside bfloat16 layers."""
    cfg = config(DIGITS_256, model, epochs=6, lr=3e-3, bf16="on")
    done = run(cfg)[-1]
    assert isinstance(done, Finished)
    losses = done.history["train_loss"]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] / 2
    assert done.history["val_accuracy"][-1] >= 0.6  # 10 digit classes: chance is 0.1


# -- events ---------------------------------------------------------------------------------


def test_event_order_and_history():
    cfg = config(epochs=3)  # 256 images, batch 64: 4 batches per epoch
    events = run(cfg)
    kinds = [type(e).__name__ for e in events]
    assert kinds == (["BatchEnd"] * 4 + ["EpochEnd"]) * 3 + ["Finished"]

    batches = [e for e in events if isinstance(e, BatchEnd)]
    assert [(b.epoch, b.batch, b.step) for b in batches] == [
        (e, b, 4 * (e - 1) + b) for e in (1, 2, 3) for b in (1, 2, 3, 4)
    ]
    assert all(b.batches == 4 for b in batches)
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert [(e.epoch, e.epochs) for e in epochs] == [(1, 3), (2, 3), (3, 3)]

    done = events[-1]
    history = done.history
    for key in ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert len(history[key]) == 3, key
    assert history["epoch"] == [1, 2, 3]
    assert history["batch_step"] == list(range(1, 13))
    assert history["batch_loss"] == pytest.approx([b.loss for b in batches])
    assert history["val_loss"] == [e.val_loss for e in epochs]
    assert history["val_accuracy"] == [e.val_accuracy for e in epochs]
    best = int(np.argmin(history["val_loss"])) + 1
    assert done.best_epoch == best
    assert [e.improved for e in epochs] == [
        v < min(history["val_loss"][:i], default=math.inf)
        for i, v in enumerate(history["val_loss"])
    ]
    assert not done.stopped and not done.stopped_early
    assert all(0 <= a <= 1 for a in history["train_accuracy"] + history["val_accuracy"])
    assert not done.model.training  # handed over in eval mode


def test_epoch_metrics_are_the_mean_over_logged_windows():
    # 250 images in batches of 2: 125 steps, logged at the first step (a live curve at once),
    # every 2nd step and at the last one.
    data = DataConfig(dataset="digits", val_size=100, train_limit=250)
    events = run(config(data, epochs=1, batch_size=2, lr=1e-3))
    batches = [e for e in events if isinstance(e, BatchEnd)]
    assert [b.batch for b in batches] == [1, *range(2, 125, 2), 125]
    sizes = np.diff([0] + [2 * b.batch for b in batches])
    epoch = next(e for e in events if isinstance(e, EpochEnd))
    assert epoch.train_loss == pytest.approx(
        sum(b.loss * n for b, n in zip(batches, sizes, strict=True)) / 250, rel=1e-9
    )
    assert epoch.train_accuracy == pytest.approx(
        sum(b.accuracy * n for b, n in zip(batches, sizes, strict=True)) / 250, rel=1e-9
    )


def test_stop_event_ends_the_run_after_the_current_batch():
    stop = threading.Event()
    events = []
    for event in train(config(epochs=3, batch_size=32), datasets.load(DIGITS_256), stop):
        events.append(event)
        if isinstance(event, BatchEnd):
            stop.set()
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["BatchEnd", "EpochEnd", "Finished"]
    done = events[-1]
    assert done.stopped and not done.stopped_early
    assert len(done.history["epoch"]) == 1


def test_stop_before_the_first_batch_gives_an_empty_history():
    stop = threading.Event()
    stop.set()
    events = run(config(epochs=2), stop)
    assert [type(e).__name__ for e in events] == ["Finished"]
    assert events[0].stopped and events[0].history["epoch"] == []


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_huge_learning_rate_diverges(optimizer):
    cfg = config(epochs=3, lr=1e4, optimizer=optimizer)
    events = run(cfg)
    assert isinstance(events[-1], Diverged)
    assert not any(isinstance(e, Finished) for e in events)
    diverged = events[-1]
    assert not math.isfinite(diverged.loss) or diverged.loss > 100 * math.log(10)
    assert diverged.reason and diverged.step >= 1
    assert len(diverged.history["epoch"]) < 3


def test_early_stopping_restores_the_best_weights():
    # 64 images, 40 epochs: the validation loss bottoms out and rises well before the end.
    cfg = config(DIGITS_64, epochs=40, lr=3e-3, early_stopping=1)
    events = run(cfg)
    done = events[-1]
    assert isinstance(done, Finished)
    history = done.history
    last = history["epoch"][-1]
    assert done.stopped_early and not done.stopped
    assert last < 40
    assert done.best_epoch == last - 1  # patience 1: one epoch without improvement
    assert done.best_epoch == int(np.argmin(history["val_loss"])) + 1
    data = datasets.load(cfg.data)
    logits = predict_logits(done.model, data.x_val)
    val_loss = F.cross_entropy(logits, torch.from_numpy(data.y_val)).item()
    assert val_loss == pytest.approx(history["val_loss"][done.best_epoch - 1], rel=1e-5)
    assert val_loss < history["val_loss"][-1]  # not the last epoch's weights


def test_without_early_stopping_all_epochs_run():
    done = run(config(DIGITS_64, epochs=12, lr=3e-3))[-1]
    assert done.history["epoch"] == list(range(1, 13)) and not done.stopped_early


# -- optimizers and schedules ---------------------------------------------------------------


@pytest.mark.parametrize("schedule", FIELDS["schedule"].choices)
@pytest.mark.parametrize("optimizer", FIELDS["optimizer"].choices)
def test_every_optimizer_and_schedule_trains(optimizer, schedule):
    cfg = config(epochs=2, optimizer=optimizer, schedule=schedule, step_size=1, lr=2e-3)
    events = run(cfg)
    done = events[-1]
    assert isinstance(done, Finished)
    assert len(done.history["lr"]) == 2
    assert all(math.isfinite(v) for v in done.history["val_loss"])
    assert done.history["train_loss"][-1] < done.history["train_loss"][0]


def lrs(schedule: str, epochs: int = 3, **options) -> tuple[list[float], list[float]]:
    """(per-epoch recorded lr, per-logged-batch lr) for 256 digits in batches of 64."""
    events = run(config(epochs=epochs, schedule=schedule, lr=1e-2, **options))
    assert isinstance(events[-1], Finished)
    return events[-1].history["lr"], [e.lr for e in events if isinstance(e, BatchEnd)]


def test_constant_schedule_keeps_the_learning_rate():
    per_epoch, per_batch = lrs("constant")
    assert per_epoch == [1e-2] * 3 and set(per_batch) == {1e-2}


def test_step_schedule_decays_every_step_size_epochs():
    assert lrs("step", step_size=1, gamma=0.5)[0] == pytest.approx([1e-2, 5e-3, 2.5e-3])
    assert lrs("step", epochs=4, step_size=2, gamma=0.1)[0] == pytest.approx(
        [1e-2, 1e-2, 1e-3, 1e-3]
    )


def test_cosine_schedule_anneals_to_zero_over_the_run():
    per_epoch, _ = lrs("cosine")  # 4 steps per epoch, 12 in all
    # Each epoch records the rate its last step used: step 4e - 1 of the cosine (0-based).
    expected = [0.5 * 1e-2 * (1 + math.cos(math.pi * (4 * e - 1) / 12)) for e in (1, 2, 3)]
    assert per_epoch == pytest.approx(expected, abs=1e-12)
    assert per_epoch[-1] < 1e-2 / 50  # nearly zero by the last step


def test_onecycle_warms_up_to_the_peak_then_anneals():
    data = DataConfig(dataset="digits", val_size=100, train_limit=512)  # 8 steps per epoch
    events = run(config(data, epochs=3, schedule="onecycle", lr=1e-2))
    seen = [e.lr for e in events if isinstance(e, BatchEnd)]
    peak = int(np.argmax(seen))
    assert seen[peak] == pytest.approx(1e-2, rel=0.05)
    assert 0 < peak < len(seen) // 2  # warm-up is the first quarter
    # Then it only decreases (the last logged value is one step past the schedule's end: see
    # test_onecycle_records_its_final_learning_rate).
    assert all(a >= b for a, b in zip(seen[peak:-1], seen[peak + 1 : -1], strict=False))
    assert seen[0] < 1e-2 / 2
    assert events[-1].history["lr"][-1] < 1e-2 / 100


def test_onecycle_records_its_final_learning_rate():
    per_epoch, _ = lrs("onecycle", epochs=2)  # 8 steps in all
    assert per_epoch[-1] <= 1e-2 / 1000


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5])
def test_onecycle_handles_very_short_runs(steps):
    data = DataConfig(dataset="digits", val_size=100, train_limit=64 * steps)
    events = run(config(data, epochs=1, schedule="onecycle"))
    assert isinstance(events[-1], Finished)
    assert sum(isinstance(e, BatchEnd) for e in events) == steps
    assert all(0 < e.lr <= QUICK.lr for e in events if isinstance(e, BatchEnd))


def test_plateau_schedule_decays_when_validation_stops_improving():
    # Patience 0: every epoch whose validation loss is not a new best halves the lr.
    events = run(
        config(DIGITS_64, epochs=14, lr=3e-3, schedule="plateau", plateau_patience=0, gamma=0.5)
    )
    history = events[-1].history
    val, rate = history["val_loss"], history["lr"]
    assert rate[0] == 3e-3
    for e in range(1, len(rate)):
        improved = val[e - 1] < min(val[: e - 1], default=math.inf) * (1 - 1e-4)
        assert rate[e] == pytest.approx(rate[e - 1] * (1 if improved else 0.5)), e
    assert rate[-1] < rate[0]  # this setup overfits: the decay does happen


# -- loss terms -----------------------------------------------------------------------------


def first_batch(cfg: RunConfig) -> BatchEnd:
    return next(e for e in train(cfg, datasets.load(cfg.data)) if isinstance(e, BatchEnd))


def initial_weights(cfg: RunConfig) -> list[torch.Tensor]:
    """The weight matrices train() starts from (same seed, same build)."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, datasets.load(cfg.data))
    return [p.detach() for p in model.parameters() if p.ndim > 1]


@pytest.mark.parametrize("model", ["mlp", "cnn_bn"])
def test_l1_and_l2_penalties_add_to_the_loss(model):
    plain = first_batch(config(model=model, optimizer="sgd")).loss
    with_l2 = first_batch(config(model=model, optimizer="sgd", l2=1e-3)).loss
    with_l1 = first_batch(config(model=model, optimizer="sgd", l1=1e-4)).loss
    weights = initial_weights(config(model=model))
    l2 = 1e-3 * sum(float(w.pow(2).sum()) for w in weights)
    l1 = 1e-4 * sum(float(w.abs().sum()) for w in weights)
    assert with_l2 > plain and with_l1 > plain
    assert with_l2 - plain == pytest.approx(l2, rel=1e-4)
    assert with_l1 - plain == pytest.approx(l1, rel=1e-4)


def test_label_smoothing_is_applied_to_the_cross_entropy():
    cfg = config(label_smoothing=0.1)
    data = datasets.load(cfg.data)
    # Rebuild step 1 of train(): same seed, same model, same first batch.
    torch.manual_seed(0)
    model = accel.accelerate(build_model(cfg, data)).train()  # as train() runs it
    gen = torch.Generator().manual_seed(0)
    y = torch.from_numpy(data.y_train)
    idx = augment.epoch_order(y, False, gen)[: cfg.train.batch_size]
    logits = model(to_float(torch.from_numpy(data.x_train)[idx]))
    smoothed = F.cross_entropy(logits, y[idx], label_smoothing=0.1).item()
    plain = F.cross_entropy(logits, y[idx]).item()
    assert smoothed != pytest.approx(plain, rel=1e-6)
    assert first_batch(cfg).loss == pytest.approx(smoothed, rel=1e-5)
    assert first_batch(config()).loss == pytest.approx(plain, rel=1e-5)


# -- reproducibility ------------------------------------------------------------------------


def test_same_seed_same_history_other_seed_other_history():
    options = dict(epochs=2, jitter=2, hflip=True, oversample=True, schedule="onecycle")
    data = DataConfig(dataset="digits", val_size=100, train_limit=128)
    a = run(config(data, "cnn_bn", seed=0, **options))[-1]
    b = run(config(data, "cnn_bn", seed=0, **options))[-1]
    c = run(config(data, "cnn_bn", seed=1, **options))[-1]
    assert history_without_times(a.history) == history_without_times(b.history)
    assert history_without_times(a.history) != history_without_times(c.history)
    for (name, p), q in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name


def test_oversampling_balances_each_epoch():
    data = DataConfig(dataset="digits", val_size=100, train_limit=200)
    counts = datasets.load(data).class_counts()
    events = run(config(data, epochs=1, batch_size=10, oversample=True))
    batches = [e for e in events if isinstance(e, BatchEnd)]
    assert batches[-1].batches == math.ceil(10 * counts.max() / 10)
    assert batches[-1].batch == batches[-1].batches


def test_oversampling_with_a_class_missing_from_training():
    data = DataConfig(dataset="digits", val_size=100, train_limit=5)  # 5 of the 10 digits
    assert (datasets.load(data).class_counts() == 0).any()
    events = run(config(data, epochs=1, batch_size=1, oversample=True))
    batches = [e for e in events if isinstance(e, BatchEnd)]
    assert batches[-1].batch == batches[-1].batches


# -- configuration --------------------------------------------------------------------------

BAD_TRAIN = {
    "epochs 0": dict(epochs=0),
    "batch 0": dict(batch_size=0),
    "lr 0": dict(lr=0.0),
    "lr negative": dict(lr=-1e-3),
    "lr nan": dict(lr=float("nan")),
    "lr inf": dict(lr=float("inf")),
    "optimizer": dict(optimizer="rmsprop"),
    "schedule": dict(schedule="linear"),
    "weight decay": dict(weight_decay=-1.0),
    "l2 nan": dict(l2=float("nan")),
    "label smoothing 1": dict(label_smoothing=1.0),
    "gamma 0": dict(gamma=0.0),
    "bf16": dict(bf16="maybe"),
    "device": dict(device="tpu"),
}
BAD_MODEL = {
    "dropout 1": dict(dropout=1.0),
    "hidden 0": dict(hidden=(100, 0)),
    "width 0": dict(width=0),
}
BAD_DATA = {"val 0": dict(val_size=0), "limit 0": dict(train_limit=0)}


def bad_configs():
    for name, options in BAD_TRAIN.items():
        yield pytest.param(config(**options), id=name)
    for name, options in BAD_MODEL.items():
        yield pytest.param(RunConfig(DIGITS_256, ModelConfig("mlp", **options), QUICK), id=name)
    for name, options in BAD_DATA.items():
        yield pytest.param(RunConfig(replace(DIGITS_256, **options), train=QUICK), id=name)


@pytest.mark.parametrize("cfg", list(bad_configs()))
def test_bad_configuration_is_a_user_error(cfg):
    with pytest.raises(UserError):
        validate_config(cfg)


@pytest.mark.parametrize("options", [dict(epochs=0), dict(lr=float("nan"))], ids=["epochs", "lr"])
def test_train_validates_before_doing_anything(options):
    with pytest.raises(UserError):
        next(train(config(**options), datasets.load(DIGITS_256)))


@pytest.mark.parametrize(
    "cfg",
    [
        pytest.param(
            RunConfig(DIGITS_256, ModelConfig("mlp", hidden=()), QUICK),
            id="no hidden layer",
        ),
        pytest.param(
            config(schedule="step", step_size=0),
            id="step size 0",
        ),
        pytest.param(
            config(optimizer="sgd", momentum=-1.0),
            id="negative momentum",
        ),
    ],
)
def test_configuration_gaps(cfg):
    with pytest.raises(UserError):
        validate_config(cfg)


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_freed_tensor_memory_is_reused_without_new_page_faults():
    # A training step frees and allocates the same large tensors; each fresh 16 MB block
    # costs 4,096 page faults unless glibc keeps freed memory (devices.keep_freed_memory).
    assert devices.keep_freed_memory()
    for _ in range(10):  # the heap settles (glibc faults in the first few blocks)
        torch.empty(4 << 20).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        torch.empty(4 << 20).fill_(1.0)  # 16 MB, freed at once
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 5 * 4096  # without: 20 * 4096 (every block fresh pages)
