"""Frozen run configuration: data, model and training, with commented defaults.

Pages and the command line build variants with ``dataclasses.replace``; every stored run keeps
``to_dict(cfg)`` so it can be rebuilt exactly (``from_dict``). What each field may hold, its
label and help, and the checks a run passes are in core.schema.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from core import UserError

TUPLE_FIELDS = ("hidden", "stages", "no_relu", "no_pool", "skip")  # ModelConfig int tuples


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
    optimizer: str = "adamw"  # adam | adamw | sgd | nesterov (SGD, Nesterov's momentum)
    momentum: float = 0.9  # sgd and nesterov only
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
