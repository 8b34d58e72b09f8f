"""Evaluation reports against hand-computed values and scikit-learn."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from core import metrics

CLASSES = ("a", "b", "c")
# 3 classes, 8 samples. Predictions (argmax): 0 0 1 | 1 2 0 | 2 2  -> 5 of 8 right.
Y = np.array([0, 0, 0, 1, 1, 1, 2, 2])
P = np.array(
    [
        [0.70, 0.20, 0.10],
        [0.50, 0.30, 0.20],
        [0.20, 0.50, 0.30],  # wrong: true a, predicted b
        [0.10, 0.80, 0.10],
        [0.25, 0.35, 0.40],  # wrong: true b, predicted c
        [0.60, 0.30, 0.10],  # wrong: true b, predicted a
        [0.10, 0.20, 0.70],
        [0.20, 0.15, 0.65],
    ]
)
CM = [[2, 1, 0], [1, 1, 1], [0, 0, 2]]


@pytest.fixture(scope="module")
def rep() -> dict:
    return metrics.report(Y, P, CLASSES)


def test_accuracy_and_confusion_matrix(rep):
    assert rep["accuracy"] == pytest.approx(5 / 8)
    assert rep["confusion_matrix"] == CM
    assert rep["support"] == 8


def test_f1_precision_recall_by_hand(rep):
    # precision = tp / column, recall = tp / row
    precision = [2 / 3, 1 / 2, 2 / 3]
    recall = [2 / 3, 1 / 3, 2 / 2]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall, strict=True)]
    support = [3, 3, 2]
    for i, name in enumerate(CLASSES):
        row = rep["per_class"][name]
        assert row["precision"] == pytest.approx(precision[i])
        assert row["recall"] == pytest.approx(recall[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["support"] == support[i]
        assert row["accuracy"] == pytest.approx(recall[i])
    assert rep["macro_f1"] == pytest.approx(sum(f1) / 3)  # 0.6222
    assert rep["weighted_f1"] == pytest.approx(np.dot(f1, support) / 8)  # 0.6
    assert rep["macro_precision"] == pytest.approx(sum(precision) / 3)
    assert rep["weighted_recall"] == pytest.approx(5 / 8)


def test_agrees_with_scikit_learn(rep):
    pred = P.argmax(1)
    assert rep["macro_f1"] == pytest.approx(skm.f1_score(Y, pred, average="macro"))
    assert rep["weighted_f1"] == pytest.approx(skm.f1_score(Y, pred, average="weighted"))
    assert rep["log_loss"] == pytest.approx(skm.log_loss(Y, P), rel=1e-6)
    assert rep["log_loss"] == pytest.approx(-np.mean(np.log(P[np.arange(8), Y])), rel=1e-6)


def test_roc_auc_agrees_with_scikit_learn_without_ties():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    p = rng.dirichlet(np.ones(4), size=40) + np.eye(4)[y] * rng.uniform(0, 1, (40, 1))
    p /= p.sum(1, keepdims=True)
    expected = skm.roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert metrics.roc_auc(y, p) == pytest.approx(expected, rel=1e-9)
    assert metrics.report(y, p, tuple("wxyz"))["roc_auc_macro"] == pytest.approx(expected)


def test_roc_auc_counts_tied_scores_as_half(rep):
    # P's rows sum to 1 (up to float rounding) and hold ties: class b's 0.30 in rows 1 and 5.
    expected = skm.roc_auc_score(Y, P, multi_class="ovr", average="macro")
    per_class = np.mean([skm.roc_auc_score(k == Y, P[:, k]) for k in range(3)])
    assert expected == pytest.approx(per_class)
    assert rep["roc_auc_macro"] == pytest.approx(expected)


def test_normalized_confusion_rows(rep):
    norm = np.array(rep["confusion_matrix_normalized"])
    np.testing.assert_allclose(norm.sum(axis=1), 1.0)
    np.testing.assert_allclose(norm, np.array(CM) / np.array(CM).sum(1, keepdims=True))
    empty = metrics.normalize_rows(np.array([[3, 1], [0, 0]]))
    np.testing.assert_array_equal(empty, [[0.75, 0.25], [0.0, 0.0]])


def test_report_is_plain_json(rep):
    assert json.loads(json.dumps(rep)) == rep


def test_top_k_accuracy_by_hand():
    # Rank of the true class: 1 1 3 1 2 2 1 1 -> top-1 5/8, top-2 7/8, top-3 8/8.
    assert metrics.top_k_accuracy(Y, P, 1) == pytest.approx(5 / 8)
    assert metrics.top_k_accuracy(Y, P, 2) == pytest.approx(7 / 8)
    assert metrics.top_k_accuracy(Y, P, 3) == 1.0
    assert metrics.top_k_accuracy(Y, P, 7) == 1.0  # k capped at the number of classes
    y = np.array([0, 1, 2, 3])
    p = np.array([[0.1, 0.2, 0.3, 0.4]] + [[0.4, 0.3, 0.2, 0.1]] * 3)  # true ranks: 4 2 3 4
    assert metrics.top_k_accuracy(y, p, 3) == pytest.approx(0.5)
    assert metrics.report(y, p, ("w", "x", "y", "z"))["top3_accuracy"] == pytest.approx(0.5)


def test_roc_auc_is_none_when_a_class_is_missing():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    rep = metrics.report(y, p, CLASSES)
    assert rep["roc_auc_macro"] is None
    assert rep["per_class"]["c"]["support"] == 0
    assert rep["confusion_matrix_normalized"][2] == [0.0, 0.0, 0.0]
    assert math.isfinite(rep["log_loss"])


def test_binary_case():
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    p = np.stack([1 - p1, p1], axis=1)
    rep = metrics.report(y, p, ("neg", "pos"))
    assert rep["roc_auc_macro"] == pytest.approx(0.75)  # 3 of 4 pairs ordered right
    assert rep["accuracy"] == pytest.approx(0.75)
    assert rep["confusion_matrix"] == [[2, 0], [1, 1]]
    assert rep["top3_accuracy"] == 1.0 and rep["top5_accuracy"] == 1.0
    assert rep["log_loss"] == pytest.approx(skm.log_loss(y, p), rel=1e-6)
    assert metrics.top_k_accuracy(y, p, 1) == pytest.approx(0.75)


def test_zero_probabilities_do_not_break_the_log_loss():
    y = np.array([0, 1])
    p = np.array([[1.0, 0.0], [1.0, 0.0]])  # a confident miss: -log(0) without clipping
    rep = metrics.report(y, p, ("x", "y"))
    assert math.isfinite(rep["log_loss"]) and rep["log_loss"] > 5


def test_misclassified_highest_loss_first():
    items = metrics.misclassified(Y, P)
    assert [i["index"] for i in items] == [2, 5, 4]  # losses -ln .2 > -ln .3 > -ln .35
    first = items[0]
    assert first == {
        "index": 2,
        "true": 0,
        "predicted": 1,
        "p_true": pytest.approx(0.2),
        "p_predicted": pytest.approx(0.5),
        "loss": pytest.approx(-math.log(0.2)),
    }
    assert [i["loss"] for i in items] == sorted((i["loss"] for i in items), reverse=True)
    assert all(i["true"] != i["predicted"] for i in items)
    assert [i["index"] for i in metrics.misclassified(Y, P, limit=2)] == [2, 5]
    assert metrics.misclassified(Y, np.eye(3)[Y]) == []


def test_pair_indices_are_exactly_the_cell_members():
    pred = P.argmax(1)
    np.testing.assert_array_equal(metrics.pair_indices(Y, pred, 1, 0), [5])
    np.testing.assert_array_equal(metrics.pair_indices(Y, pred, 0, 0), [0, 1])
    np.testing.assert_array_equal(metrics.pair_indices(Y, pred, 2, 2), [6, 7])
    cells = []
    for t in range(3):
        for p in range(3):
            members = metrics.pair_indices(Y, pred, t, p)
            assert len(members) == CM[t][p]
            assert all(Y[i] == t and pred[i] == p for i in members)
            cells.extend(members.tolist())
    assert sorted(cells) == list(range(8))


def test_overfitting_epoch():
    assert metrics.overfitting_epoch([1.0, 0.8, 0.7, 0.75, 0.9]) == 3
    assert metrics.overfitting_epoch([1.0, 0.8, 0.7, 0.6]) is None
    assert metrics.overfitting_epoch([0.5]) is None
    assert metrics.overfitting_epoch([]) is None
    assert metrics.overfitting_epoch([0.4, 0.9]) == 1
