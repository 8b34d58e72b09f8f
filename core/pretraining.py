"""What pretraining buys: the same small labelled set trained three ways (seed 001's question).

- ``scratch``: seed 001's classifier (the autoencoder's encoder and a dense head) from random
  weights;
- ``autoencoder``: the same classifier on the encoder of seed 001's autoencoder, pretrained
  without labels on every training image, then fine-tuned;
- ``imagenet``: EfficientNet-Lite0's ImageNet features (frozen) and a new head.

Only the labelled set changes between runs (its first N images of the training split): the
test set is the dataset's own, and validation is a fixed 1,000 images carved from the
training split. Every run sees about the same number of optimisation steps (``STEPS``), so
a run on 100 images is not simply one that trained less. Every run is an ordinary run:
content-addressed, cached, queued as a job on the page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from core import UserError, seed001
from core.config import DataConfig, ModelConfig, RunConfig, TrainConfig

LABELS = (100, 500, 1000, 5000)  # labelled training images
PHOTO_LABELS = (10, 20, 50, 100, 200, 500)  # the same, for a photo dataset's few hundred
PHOTO_SIDE = 64  # photos' side for the study: the autoencoder and two of three starts
STARTS = ("scratch", "autoencoder", "imagenet")
STEPS = 300  # optimisation steps each classifier takes, about
VAL = 1000  # validation images (carved from the training split, as always)
AE_EPOCHS = 10  # the autoencoder's (seed 001 trained 30; the page lets a class choose)
MODES = {"scratch": "random", "autoencoder": "finetune"}  # seed 001's encoder modes


@dataclass(frozen=True)
class Cell:
    """One point of the chart: a start and a number of labelled images."""

    start: str
    labels: int
    cfg: RunConfig


def data_of(dataset: str = "fashion-mnist") -> DataConfig:
    """A built-in dataset with ``VAL`` validation images; a photo dataset (a folder or zip of
    class folders) at ``PHOTO_SIDE`` pixels, its validation its usual share (at most 20%)."""
    from core.data import BUILTIN

    if dataset in BUILTIN:
        return DataConfig(dataset, val_size=VAL)
    return DataConfig(dataset, image_size=PHOTO_SIDE)


def sizes_for(dataset: str, available: int) -> tuple[int, ...]:
    """The labelled-set sizes worth offering: those below the training split's size (a
    photo dataset's smaller ones), and the whole split when none is."""
    from core.data import BUILTIN

    offered = tuple(n for n in (LABELS if dataset in BUILTIN else PHOTO_LABELS) if n < available)
    return offered or (available,)


def autoencoder(dataset: str = "fashion-mnist", epochs: int = AE_EPOCHS) -> RunConfig:
    """Seed 001's autoencoder on every training image, labels unused."""
    return seed001.autoencoder(latent=128, dropout=0.1, epochs=epochs, data=data_of(dataset))


def schedule(labels: int) -> tuple[int, int]:
    """(batch size, epochs) for ``labels`` images: about ten batches an epoch on small
    sets (100 a batch at most), and enough epochs for ``STEPS`` steps (5 to 40)."""
    batch = min(100, max(10, labels // 10))
    steps_per_epoch = math.ceil(labels / batch)
    return batch, min(40, max(5, math.ceil(STEPS / steps_per_epoch)))


def cell(start: str, labels: int, encoder: str, dataset: str = "fashion-mnist") -> Cell:
    """The run of ``start`` on the first ``labels`` training images; ``encoder``: the
    autoencoder run the first two start from (its architecture, and for one its weights)."""
    batch, epochs = schedule(labels)
    data = replace(data_of(dataset), train_limit=labels)
    train = TrainConfig(epochs=epochs, batch_size=batch, lr=1e-3, optimizer="adam",
                        schedule="constant")  # fmt: skip
    if start == "imagenet":
        model = ModelConfig("efficientnet_lite0", tune="frozen")
    else:
        model = ModelConfig(seed001.CLASSIFIER, encoder=encoder, encoder_mode=MODES[start])
    return Cell(start, labels, RunConfig(data=data, model=model, train=train))


def cells(encoder: str, labels=LABELS, dataset: str = "fashion-mnist") -> list[Cell]:
    return [cell(start, n, encoder, dataset) for n in labels for start in STARTS]


def parse_labels(text: str, available: int | None = None) -> tuple[int, ...]:
    """The sizes written as "100,1000" -> (100, 1000): whole numbers from 10 up, sorted, each
    below the training split's size when given (UserError, one line, otherwise)."""
    try:
        values = sorted({int(p) for p in text.replace(" ", "").split(",") if p})
    except ValueError:
        raise UserError(
            f"--labels: numbers of labelled images like 100,1000 (got {text!r})"
        ) from None
    if not values or values[0] < 10 or len(values) > 8:
        raise UserError(f"--labels: 1 to 8 sizes of at least 10 images (got {text!r})")
    if available is not None and values[-1] > available:
        raise UserError(f"--labels: the training split has {available:,} images "
                        f"(got {values[-1]:,})")  # fmt: skip
    return tuple(values)
