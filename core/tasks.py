"""What a model learns, as objects: its loss, evaluation, history, preview and report.

A registry entry names its task (``@register(..., task="reconstruct")``); everything that
differs between a classifier and an autoencoder is asked of ``tasks.of(name)``, so no module
tests a model name or a task string to decide what to do.

- ``Classify``: cross-entropy on the labels (with label smoothing); accuracy and top-5 on
  validation; the test report is precision, recall and F1 per class (core.metrics), and the
  test probabilities are kept beside the run for the pages.
- ``Reconstruct``: an autoencoder, MSE between the image and its reconstruction (pixels in
  [0, 1]); no accuracy; the test report is the MSE; each epoch a few test images and their
  reconstructions go to the page (``preview``).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

# Bumped when training gives other numbers for a fixed seed: core/train.py's loop, optimizers
# and schedules, these tasks' losses and evaluation. Part of every run key (core.store.run_key;
# declared here, without torch, since a cache hit must not import it), so a docstring or a
# speed-only change keeps every stored run; tests/test_fingerprints.py catches a forgotten bump.
TRAINER_VERSION = 1
PREVIEW = 8  # test images an autoencoder job reconstructs after each epoch
HISTORY = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
           "val_top5_accuracy", "lr", "seconds")  # fmt: skip


class Task:
    """What every task answers; ``Classify`` and ``Reconstruct`` fill it in."""

    name: ClassVar[str]
    has_accuracy: ClassVar[bool]

    def history(self) -> dict:
        """Empty per-epoch lists, and the per-batch loss trace."""
        keys = [k for k in HISTORY if self.has_accuracy or not k.endswith("accuracy")]
        return {k: [] for k in keys} | {"batch_step": [], "batch_loss": []}

    def preview_images(self, data_cfg) -> np.ndarray | None:
        """Test images of ``data_cfg`` (a DataConfig) a job shows the model's output on after
        each epoch (None: none)."""
        return None

    def preview(self, model, images: np.ndarray, epoch: int) -> dict:
        """What a page shows of ``images`` after ``epoch`` (see ``preview_images``)."""
        return {}


class Classify(Task):
    name = "classify"
    has_accuracy = True

    def loss(self, out, x, y, label_smoothing: float):
        """The training loss of the model's output ``out`` on float images ``x`` and labels."""
        import torch.nn.functional as F

        return F.cross_entropy(out.float(), y, label_smoothing=label_smoothing)

    def correct(self, out, y):
        """Right answers in a batch (a tensor, read once per log line), or None."""
        return (out.argmax(1) == y).sum()

    def blow_up(self, num_classes: int) -> float:
        """A training loss above this means the run diverged: 100 times chance (ln C)."""
        return 100.0 * math.log(max(num_classes, 2))

    def evaluate(self, model, x, y, bf16: bool) -> tuple[float, float, float]:
        """(mean cross-entropy, accuracy, top-5 accuracy) on device tensors x (uint8) and y.
        With 5 classes or fewer, top-5 is 1."""
        import torch.nn.functional as F

        from core.train import predict_logits

        logits = predict_logits(model, x, bf16)
        y = y.cpu()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        return (
            F.cross_entropy(logits, y).item(),
            (logits.argmax(1) == y).float().mean().item(),
            (top5 == y[:, None]).any(1).float().mean().item(),
        )

    def test_probs(self, model, data) -> np.ndarray | None:
        """What is kept beside a stored run for the pages: its test-set probabilities."""
        from core.train import predict_proba

        return predict_proba(model, data.x_test)

    def report(self, model, data, probs) -> dict:
        """The stored run's test metrics."""
        from core import metrics

        return metrics.report(data.y_test, probs, data.classes)

    def test_lines(self, meta: dict) -> list[str]:
        """The stored run's test metrics as the command line prints them, and the seed
        paper's figure beside them where one exists."""
        from core import presets

        lines = [classification_report(meta)]
        if paper := presets.paper_for(meta["model"], meta["config"]["data"]["dataset"]):
            lines.append(f"{paper['source']} reported accuracy {paper['accuracy']:.4f}")
        return lines


class Reconstruct(Task):
    name = "reconstruct"
    has_accuracy = False

    def loss(self, out, x, y, label_smoothing: float):
        import torch.nn.functional as F

        return F.mse_loss(out.float(), x)

    def correct(self, out, y):
        return None

    def blow_up(self, num_classes: int) -> float:
        return 1.0  # an MSE on pixels in [0, 1] cannot pass 1: only a NaN means divergence

    def evaluate(self, model, x, y, bf16: bool) -> tuple[float, float, float]:
        from core.train import reconstruction_mse

        return reconstruction_mse(model, x, bf16), math.nan, math.nan

    def test_probs(self, model, data) -> None:
        return None

    def report(self, model, data, probs) -> dict:
        from core.train import reconstruction_mse

        return {"mse": reconstruction_mse(model, data.x_test), "support": len(data.y_test)}

    def test_lines(self, meta: dict) -> list[str]:
        from core import seed001

        lines = [f"test MSE {meta['test']['mse']:.4f} (pixels in [0, 1])"]
        if line := seed001.paper_line(meta["config"]):
            lines.append(line)
        return lines

    def preview_images(self, data_cfg) -> np.ndarray:
        from core import data as datasets

        return datasets.load(data_cfg).x_test[:PREVIEW].copy()

    def preview(self, model, images: np.ndarray, epoch: int) -> dict:
        """{"epoch", "originals", "reconstructions": uint8 (K, C, H, W)}."""
        from core.train import reconstruct, to_uint8

        return {"epoch": epoch, "originals": images,
                "reconstructions": to_uint8(reconstruct(model, images))}  # fmt: skip


def classification_report(meta: dict) -> str:
    """A classification report like scikit-learn's, plus the summary numbers."""
    test = meta["test"]
    width = max(len("weighted avg"), *(len(c) for c in meta["classes"])) + 2
    lines = [f"{'':<{width}}precision    recall  f1-score   support"]
    for name, row in test["per_class"].items():
        lines.append(
            f"{name:<{width}}{row['precision']:9.4f} {row['recall']:9.4f}"
            f" {row['f1']:9.4f} {row['support']:9d}"
        )
    n = test["support"]
    lines += [
        "",
        f"{'accuracy':<{width}}{'':9} {'':9} {test['accuracy']:9.4f} {n:9d}",
        f"{'macro avg':<{width}}{test['macro_precision']:9.4f} {test['macro_recall']:9.4f}"
        f" {test['macro_f1']:9.4f} {n:9d}",
        f"{'weighted avg':<{width}}{test['weighted_precision']:9.4f}"
        f" {test['weighted_recall']:9.4f} {test['weighted_f1']:9.4f} {n:9d}",
        "",
        f"top-3 accuracy {test['top3_accuracy']:.4f}   ROC-AUC (macro, one-vs-rest) "
        + (f"{test['roc_auc_macro']:.4f}" if test["roc_auc_macro"] is not None else "n/a")
        + f"   log loss {test['log_loss']:.4f}",
    ]
    if meta.get("overfitting_epoch"):
        lines.append(f"validation loss lowest at epoch {meta['overfitting_epoch']}, then rises")
    return "\n".join(lines)


TASKS: dict[str, Task] = {t.name: t for t in (Classify(), Reconstruct())}


def of(model_name: str) -> Task:
    """The task of registered model ``model_name`` (UserError for an unknown name)."""
    from core.models import catalog

    return TASKS[catalog.family(model_name).task]


def named(name: str) -> Task:
    """The task called ``name`` ("classify", "reconstruct"), as stored in a run's metadata."""
    return TASKS[name]


__all__ = ["TASKS", "Classify", "Reconstruct", "Task", "named", "of"]
