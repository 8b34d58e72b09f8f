"""Frozen run configuration: data, model and training, with commented defaults.

Pages and the command line build variants with ``dataclasses.replace``; every stored run keeps
``to_dict(cfg)`` so it can be rebuilt exactly (``from_dict``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

from core import UserError

OPTIMIZERS = ("adam", "adamw", "sgd")
ENCODER_MODES = ("finetune", "frozen", "random")  # ae_classifier: how the encoder starts
TUNE_MODES = ("frozen", "top", "all")  # backbones: fixed features, last stage, everything
SCHEDULES = ("constant", "step", "cosine", "onecycle", "plateau")
TUPLE_FIELDS = ("hidden", "stages", "no_relu", "no_pool", "skip")  # ModelConfig int tuples

# Upper bounds: what a classroom run can use. Beyond them a typo (epochs=1000000000,
# hidden=1000000000x1) would allocate gigabytes or never end; the size of the built model
# and its training memory are bounded in core.runs (a cap on parameters and on memory).
MAX_EPOCHS = 500
MAX_BATCH = 4096
MAX_LAYERS = 8  # dense hidden layers, or conv stages
MAX_UNITS = 4096  # units of a dense layer, latent units
MAX_CHANNELS = 1024  # channels of a conv layer or stage
MAX_KERNEL = 15
MAX_JITTER = 64  # pixels; and at most half the image side
MAX_IMAGES = 10_000_000  # val_size, train_limit
MAX_PATIENCE = 1000  # epochs: early stopping, step size, plateau patience
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "fashion-mnist"  # "fashion-mnist", "digits", or a folder of class folders
    data_dir: str | None = None  # where Fashion-MNIST's .gz files are; None: search (see data)
    val_size: int = 10_000  # images held out of the training set for validation (seed 001: 10k)
    split_seed: int = 0  # the train/val split is a fixed permutation of this seed
    train_limit: int | None = None  # use only the first N training images (quick lessons, tests)
    image_size: int | None = None  # side in pixels; None: the source's own (28; folders 64)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "cnn_bn"  # a registry name: python -m core models
    hidden: tuple[int, ...] | None = None  # dense hidden layer sizes; None: the model's default
    dropout: float | None = None  # dropout probability; None: the model's default
    width: int | None = None  # channels of the first conv layer; None: the model's default
    latent: int | None = None  # autoencoders: latent units n (seed 001 tried 64 to 512)
    pooling: bool | None = None  # autoencoders: max-pool after each conv (seed 001's appendix)
    encoder: str | None = None  # ae_classifier: the stored autoencoder run it starts from
    encoder_mode: str | None = None  # ae_classifier: finetune | frozen | random (see models)
    stages: tuple[int, ...] | None = None  # cnn_stages: channels of each conv stage
    kernel: int | None = None  # cnn_stages: conv kernel side (odd)
    no_relu: tuple[int, ...] | None = None  # cnn_stages: stages (from 1) without their ReLU
    no_pool: tuple[int, ...] | None = None  # cnn_stages: stages without their max-pool
    skip: tuple[int, ...] | None = None  # cnn_stages: stages removed whole (conv and pool)
    tune: str | None = None  # backbones: frozen | top | all (what trains; see models)
    resolution: int | None = None  # backbones: side the network sees; None: from the images


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 256  # large batches keep 2 CPU cores busy; the schedule suits them
    lr: float = 2e-3  # peak learning rate for onecycle, the constant one otherwise
    optimizer: str = "adamw"  # adam | adamw | sgd (sgd uses momentum below)
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0  # optimizer decay (decoupled for adamw, L2-coupled otherwise)
    l1: float = 0.0  # L1 penalty on weights (not biases/norms), added to the loss
    l2: float = 0.0  # L2 penalty on weights (not biases/norms), added to the loss
    label_smoothing: float = 0.0  # 0.1 spreads 10% of each target over all classes
    schedule: str = "onecycle"  # constant | step | cosine | onecycle | plateau
    step_size: int = 3  # step schedule: epochs between decays
    gamma: float = 0.5  # step and plateau: factor applied to the learning rate
    plateau_patience: int = 1  # plateau: epochs without val-loss improvement before decaying
    early_stopping: int = 0  # stop after N epochs without val-loss improvement; 0: off
    jitter: int = 0  # random shift of up to N pixels per image (batch augmentation)
    hflip: bool = False  # random horizontal flip (fine for clothes, wrong for digits)
    oversample: bool = False  # draw each class equally often per epoch (imbalanced data)
    seed: int = 0  # weights, batch order and augmentation
    bf16: str = "auto"  # auto | on | off: bfloat16 autocast where the hardware has it
    device: str = "auto"  # auto | cpu | cuda


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def to_dict(cfg: RunConfig) -> dict:
    """A JSON-ready dict (tuples become lists)."""
    return dataclasses.asdict(cfg)


def from_dict(d: dict) -> RunConfig:
    """Inverse of ``to_dict``; unknown keys are an error, not silently dropped."""
    model = dict(d.get("model", {}))
    for name in TUPLE_FIELDS:
        if model.get(name) is not None:
            model[name] = tuple(int(v) for v in model[name])
    try:
        return RunConfig(
            data=DataConfig(**d.get("data", {})),
            model=ModelConfig(**model),
            train=TrainConfig(**d.get("train", {})),
        )
    except TypeError as e:
        raise UserError(f"bad run configuration: {e}") from None


def env_int(name: str, default: int) -> int:
    """A positive whole number the teacher sets in the environment (``default`` when unset
    or unreadable): the class's caps."""
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


def parse_sizes(text: str) -> tuple[int, ...]:
    """Layer sizes as people write them: "100", "50,50", "3x75" (seed 002's notation for
    75,75,75). The count is bounded before anything is expanded (``1000000000x1`` is one
    line, not a billion-element list); sizes are bounded by ``validate``."""
    parts = [p for p in text.replace(" ", "").split(",") if p]
    counts, sizes = [], []
    try:
        for part in parts:
            count, _, size = part.rpartition("x")
            counts.append(int(count) if count else 1)
            sizes.append(int(size))
    except ValueError:
        raise UserError(f"layer sizes look like 100, 50,50 or 3x75 (got {text!r})") from None
    if any(c < 1 for c in counts):
        raise UserError(f"a repeat count must be at least 1 (got {text!r})")
    if not parts or sum(counts) > MAX_LAYERS:
        raise UserError(f"give 1 to {MAX_LAYERS} hidden layers (got {sum(counts)})")
    return tuple(size for count, size in zip(counts, sizes, strict=True) for _ in range(count))


def _bounded(name: str, value, low, high, unit: str = "") -> None:
    """``low <= value <= high`` (finite), or one clear line naming the field and its range."""
    ok = isinstance(value, int | float) and math.isfinite(value) and low <= value <= high
    if not ok:
        raise UserError(f"{name} must be between {low:g} and {high:g}{unit} (got {value})")


def validate(cfg: RunConfig) -> RunConfig:
    """Raise UserError with one clear line for any value a run cannot use, too small or too
    large (the bounds above)."""
    t = cfg.train
    _bounded("epochs", t.epochs, 1, MAX_EPOCHS)
    _bounded("batch size", t.batch_size, 1, MAX_BATCH)
    if not (math.isfinite(t.lr) and 0 < t.lr <= 1e4):
        raise UserError(f"learning rate must be a positive number up to 1e4 (got {t.lr})")
    if t.optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {t.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    if t.schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {t.schedule!r}; choose from {', '.join(SCHEDULES)}")
    for name in ("weight_decay", "l1", "l2"):
        _bounded(name.replace("_", " "), getattr(t, name), 0, 100)
    _bounded("jitter", t.jitter, 0, MAX_JITTER, " pixels")
    _bounded("early stopping", t.early_stopping, 0, MAX_PATIENCE, " epochs")
    if not 0 <= t.label_smoothing < 1:
        raise UserError(f"label smoothing must be in [0, 1) (got {t.label_smoothing})")
    _bounded("step size", t.step_size, 1, MAX_PATIENCE, " epochs")
    _bounded("plateau patience", t.plateau_patience, 0, MAX_PATIENCE, " epochs")
    _bounded("seed", t.seed, 0, MAX_SEED)
    if not 0 <= t.momentum < 1:
        raise UserError(f"momentum must be in [0, 1) (got {t.momentum})")
    if not 0 < t.gamma <= 1:
        raise UserError(f"gamma must be in (0, 1] (got {t.gamma})")
    if t.bf16 not in ("auto", "on", "off"):
        raise UserError(f"bf16 must be auto, on or off (got {t.bf16!r})")
    if t.device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device must be auto, cpu or cuda (got {t.device!r})")
    m = cfg.model
    if m.dropout is not None and not 0 <= m.dropout < 1:
        raise UserError(f"dropout must be in [0, 1) (got {m.dropout})")
    if m.hidden is not None:
        if not m.hidden or len(m.hidden) > MAX_LAYERS:
            raise UserError(f"give 1 to {MAX_LAYERS} hidden layers (got {len(m.hidden)})")
        for h in m.hidden:
            _bounded("a hidden layer's size", h, 1, MAX_UNITS, " units")
    if m.width is not None:
        _bounded("width", m.width, 1, MAX_CHANNELS, " channels")
    if m.latent is not None:
        _bounded("latent size", m.latent, 1, MAX_UNITS, " units")
    if m.encoder_mode is not None and m.encoder_mode not in ENCODER_MODES:
        raise UserError(f"unknown encoder mode {m.encoder_mode!r}; choose from "
                        f"{', '.join(ENCODER_MODES)}")  # fmt: skip
    if m.tune is not None and m.tune not in TUNE_MODES:
        raise UserError(f"unknown tune mode {m.tune!r}; choose from {', '.join(TUNE_MODES)}")
    if m.resolution is not None:
        _bounded("resolution", m.resolution, 32, 512, " pixels")
    _validate_stages(m)
    if m.name == "ae_classifier" and not m.encoder:
        raise UserError("ae_classifier needs --encoder RUN_ID: a stored conv_autoencoder run")
    d = cfg.data
    _bounded("validation size", d.val_size, 1, MAX_IMAGES, " images")
    if d.image_size is not None:
        _bounded("image size", d.image_size, 8, 512, " pixels")
        if t.jitter > d.image_size // 2:
            raise UserError(f"jitter must be at most half the image side, {d.image_size // 2} "
                            f"pixels (got {t.jitter})")  # fmt: skip
    if d.train_limit is not None:
        _bounded("train limit", d.train_limit, 1, MAX_IMAGES, " images")
    _bounded("split seed", d.split_seed, 0, MAX_SEED)
    return cfg


def _validate_stages(m: ModelConfig) -> None:
    if m.stages is not None:
        if not m.stages or len(m.stages) > MAX_LAYERS:
            raise UserError(f"give 1 to {MAX_LAYERS} conv stages (got {len(m.stages)})")
        for c in m.stages:
            _bounded("a stage's channels", c, 1, MAX_CHANNELS)
    if m.kernel is not None:
        _bounded("kernel", m.kernel, 1, MAX_KERNEL, " pixels")
        if m.kernel % 2 == 0:
            raise UserError(f"kernel must be an odd number of pixels (got {m.kernel})")
    count = len(m.stages) if m.stages is not None else 4  # cnn_stages' default: 4 stages
    for name in ("no_relu", "no_pool", "skip"):
        stages = getattr(m, name) or ()
        if any(not 1 <= s <= count for s in stages):
            raise UserError(f"{name.replace('_', ' ')}: stages are numbered 1 to {count} "
                            f"(got {list(stages)})")  # fmt: skip
    if m.skip and len(set(m.skip)) >= count:
        raise UserError("skip removes every stage: keep at least one")
