"""Evaluation reports on scikit-learn, from labels and predicted probabilities (numpy only)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def report(y_true: np.ndarray, probs: np.ndarray, classes: tuple[str, ...] | list[str]) -> dict:
    """Everything the pages and the command line show about a model on one split.

    y_true: (N,) int labels; probs: (N, C) rows summing to 1. Plain JSON-ready values.
    """
    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1)
    cls = skm.classification_report(
        y_true, y_pred, labels=labels, target_names=list(classes), output_dict=True,
        zero_division=0,
    )  # fmt: skip
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro_precision": cls["macro avg"]["precision"],
        "macro_recall": cls["macro avg"]["recall"],
        "macro_f1": cls["macro avg"]["f1-score"],
        "weighted_precision": cls["weighted avg"]["precision"],
        "weighted_recall": cls["weighted avg"]["recall"],
        "weighted_f1": cls["weighted avg"]["f1-score"],
        "top3_accuracy": top_k_accuracy(y_true, probs, 3),
        "top5_accuracy": top_k_accuracy(y_true, probs, 5),
        "roc_auc_macro": roc_auc(y_true, probs),
        "log_loss": float(skm.log_loss(y_true, clip_rows(probs), labels=labels)),
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": normalize_rows(cm).tolist(),
        "per_class": {
            name: {
                "precision": cls[name]["precision"],
                "recall": cls[name]["recall"],
                "f1": cls[name]["f1-score"],
                "support": int(cls[name]["support"]),
                "accuracy": per_class_accuracy(cm)[i],
            }
            for i, name in enumerate(classes)
        },
        "support": len(y_true),
    }


def clip_rows(probs: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Probabilities clipped away from 0 and renormalised (bf16/float32 rows may hit 0)."""
    p = np.clip(probs.astype(np.float64), eps, 1.0)
    return p / p.sum(axis=1, keepdims=True)


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Share of samples whose true class is among the k most probable (k capped at C)."""
    c = probs.shape[1]
    if k >= c:
        return 1.0
    if c == 2:  # scikit-learn wants 1-D scores for two classes
        return float(skm.top_k_accuracy_score(y_true, probs[:, 1], k=k, labels=[0, 1]))
    return float(skm.top_k_accuracy_score(y_true, probs, k=k, labels=list(range(c))))


def roc_auc(y_true: np.ndarray, probs: np.ndarray) -> float | None:
    """One-vs-rest macro ROC-AUC; None when a class is missing from y_true (undefined)."""
    c = probs.shape[1]
    if len(np.unique(y_true)) < c:
        return None
    if c == 2:
        return float(skm.roc_auc_score(y_true, probs[:, 1]))
    # One-vs-rest by hand: scikit-learn's multiclass path wants rows that sum to 1 exactly,
    # and renormalising float32 rows breaks ties between scores (which count as 1/2).
    return float(np.mean([skm.roc_auc_score(y_true == k, probs[:, k]) for k in range(c)]))


def normalize_rows(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its total (the recall of each true class); empty rows stay 0."""
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)


def per_class_accuracy(cm: np.ndarray) -> list[float]:
    return np.diag(normalize_rows(cm)).tolist()


def misclassified(y_true: np.ndarray, probs: np.ndarray, limit: int | None = None) -> list[dict]:
    """The wrongly predicted samples, highest loss first (seed 002's "top losses" gallery).

    Each item: index, true and predicted label, probability of each, and the sample's loss.
    """
    y_pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    losses = -np.log(clip_rows(probs)[wrong, y_true[wrong]])  # cross-entropy of each sample
    order = np.argsort(-losses, kind="stable")[:limit]
    return [
        {
            "index": int(wrong[j]),
            "true": int(y_true[wrong[j]]),
            "predicted": int(y_pred[wrong[j]]),
            "p_true": float(probs[wrong[j], y_true[wrong[j]]]),
            "p_predicted": float(probs[wrong[j], y_pred[wrong[j]]]),
            "loss": float(losses[j]),
        }
        for j in order
    ]


def pair_indices(y_true: np.ndarray, y_pred: np.ndarray, true: int, predicted: int) -> np.ndarray:
    """Indices of the samples in one confusion-matrix cell (true row, predicted column)."""
    return np.flatnonzero((y_true == true) & (y_pred == predicted))


def overfitting_epoch(val_losses: list[float]) -> int | None:
    """The 1-based epoch after which validation loss rises (seed 000's overfitting point).

    That is the epoch of the lowest validation loss, when a later epoch is higher; None while
    the loss is still at its lowest in the last epoch (no overfitting seen yet).
    """
    if len(val_losses) < 2:
        return None
    best = int(np.argmin(val_losses))
    return best + 1 if best < len(val_losses) - 1 else None
