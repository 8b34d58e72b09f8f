"""How sure a classifier is, and whether it should be: reliability bins, the expected
calibration error, and temperature scaling (Guo et al., 2017, "On Calibration of Modern
Neural Networks").

A model's confidence on an image is its largest class probability. Sorted into ``BINS``
equal bins of confidence, a calibrated model is right on a bin's images as often as it is
sure of them; the expected calibration error (ECE) is the gap, weighted by the share of
images in each bin. Temperature scaling divides the logits by one number T fitted on the
validation split (the negative log-likelihood at its minimum): T > 1 softens over-confident
answers, T < 1 sharpens timid ones, and the predicted class never changes.

The stored test probabilities stand in for the test logits: ``log p`` differs from the
logits by one constant per image, which the softmax removes. The validation logits are
computed once from the model and kept beside the run (``<run_id>-val-logits.npy``).
"""

from __future__ import annotations

import numpy as np

BINS = 15  # Guo et al.'s choice
T_RANGE = (0.05, 20.0)  # temperatures searched
FLOOR = 1e-30  # a probability float32 rounded to 0, as a logit: log(FLOOR)
VAL_LOGITS = "val-logits.npy"


def bin_of(confidence: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Each confidence's bin: (0, 1/B] is bin 0, ..., ((B-1)/B, 1] is bin B-1."""
    return np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> dict:
    """Per bin: its edges, image count, accuracy and mean confidence (None when empty);
    the ECE; and each test image's bin (for a page to show a bin's images)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    which = bin_of(confidence, bins)
    counts = np.bincount(which, minlength=bins)
    hits = np.bincount(which, weights=correct, minlength=bins)
    sure = np.bincount(which, weights=confidence, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy, mean_confidence = hits / counts, sure / counts
    gaps = np.where(counts > 0, np.abs(accuracy - mean_confidence), 0.0)
    return {
        "edges": [i / bins for i in range(bins + 1)],
        "counts": counts.tolist(),
        "accuracy": [float(a) if c else None for a, c in zip(accuracy, counts, strict=True)],
        "confidence": [
            float(m) if c else None for m, c in zip(mean_confidence, counts, strict=True)
        ],
        "ece": float((counts * gaps).sum() / max(len(labels), 1)),
        "bin": which,
    }


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    return reliability(probs, labels, bins)["ece"]


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class (natural log)."""
    picked = probs[np.arange(len(labels)), labels].astype(np.float64)
    return float(-np.log(np.maximum(picked, FLOOR)).mean())


def as_logits(probs: np.ndarray) -> np.ndarray:
    """Logits that give ``probs`` back through a softmax (up to float rounding)."""
    return np.log(np.maximum(probs.astype(np.float64), FLOOR))


def scaled(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T), in float64 (stable: the row's maximum is taken off first)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in ``T_RANGE`` that minimises the negative log-likelihood of ``labels`` under
    softmax(logits / T) (one-dimensional: a bounded search on log T)."""
    from scipy.optimize import minimize_scalar

    def loss(log_t: float) -> float:
        return nll(scaled(logits, float(np.exp(log_t))), labels)

    found = minimize_scalar(loss, bounds=tuple(np.log(T_RANGE)), method="bounded",
                            options={"xatol": 1e-5})  # fmt: skip
    return float(np.exp(found.x))


def summary(test_probs: np.ndarray, test_labels: np.ndarray, val_logits: np.ndarray,
            val_labels: np.ndarray) -> dict:  # fmt: skip
    """What ``python -m core calibrate`` prints: ECE and NLL on the test set before and after
    scaling by the temperature fitted on the validation split."""
    temperature = fit_temperature(val_logits, val_labels)
    after = scaled(as_logits(test_probs), temperature)
    return {
        "ece_before": ece(test_probs, test_labels),
        "ece_after": ece(after, test_labels),
        "temperature": temperature,
        "nll_before": nll(test_probs, test_labels),
        "nll_after": nll(after, test_labels),
    }


def val_logits(store, run_id: str, model=None, data=None) -> np.ndarray:
    """The run's logits on its validation split: kept beside the run, else computed now
    (the model and data may be passed when the caller holds them)."""
    from filelock import FileLock

    meta = store.meta(run_id)
    if meta is None:
        raise KeyError(run_id)
    path = store.run_file(run_id, VAL_LOGITS)
    shape = (meta["dataset"]["sizes"]["val"], len(meta["classes"]))
    if (kept := store.read_array(path, shape)) is not None:
        return kept
    with FileLock(store.derived_lock(path.name)):
        if (kept := store.read_array(path, shape)) is not None:
            return kept
        from core.runs import run_data
        from core.train import predict_logits

        if model is None:
            model, meta = store.load_model(run_id)
        logits = predict_logits(model, (data or run_data(meta)).x_val).numpy()
        store.write_array(path, logits)
    return logits


def calibrate(store, run_id: str) -> dict:
    """``summary`` for a stored classifier run (its test probabilities and labels, its
    validation logits)."""
    from core.runs import run_data, test_probs

    meta = store.meta(run_id)
    if meta is None:
        raise KeyError(run_id)
    data = run_data(meta)
    probs = test_probs(store, run_id, data=data)
    return summary(probs, data.y_test, val_logits(store, run_id, data=data), data.y_val)
