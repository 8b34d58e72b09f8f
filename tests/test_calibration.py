"""How sure is it, and should it be (issue 21, item 1): reliability bins, the expected
calibration error, temperature scaling fitted on validation, checked against cases worked
out by hand, and ``python -m core calibrate RUN --json``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from core import calibration as cal
from core import cli
from core.config import from_dict
from core.store import Store

# Four images, two classes, five bins of confidence (worked out by hand below).
PROBS = np.array([[0.9, 0.1], [0.75, 0.25], [0.3, 0.7], [0.55, 0.45]])
LABELS = np.array([0, 1, 1, 1])


def test_reliability_bins_and_ece_by_hand():
    """Confidences 0.9, 0.75, 0.7, 0.55 fall in bins 4, 3, 3, 2 of (0, 0.2], ... (0.8, 1].
    Right, wrong, right, wrong. Bin 4: accuracy 1, confidence 0.9, gap 0.1; bin 3: accuracy
    0.5, confidence 0.725, gap 0.225; bin 2: accuracy 0, confidence 0.55, gap 0.55.
    ECE = (1 x 0.1 + 2 x 0.225 + 1 x 0.55) / 4 = 0.275."""
    found = cal.reliability(PROBS, LABELS, bins=5)
    assert found["counts"] == [0, 0, 1, 2, 1]
    assert found["accuracy"] == [None, None, 0.0, 0.5, 1.0]
    assert found["confidence"][2:] == pytest.approx([0.55, 0.725, 0.9])
    assert found["ece"] == pytest.approx(0.275)
    assert found["bin"].tolist() == [4, 3, 3, 2]
    assert found["edges"] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_nll_by_hand_and_a_bin_edge_belongs_below():
    expected = -(math.log(0.9) + math.log(0.25) + math.log(0.7) + math.log(0.45)) / 4
    assert cal.nll(PROBS, LABELS) == pytest.approx(expected)
    assert cal.bin_of(np.array([0.5, 0.5000001, 1.0, 0.0]), bins=2).tolist() == [0, 1, 1, 0]


def test_temperature_scaling_keeps_the_answer_and_finds_the_true_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20_000, 4))
    truth = cal.scaled(logits, 2.0)  # the labels are drawn as if the logits were 2x too sharp
    labels = (truth.cumsum(1) > rng.random((len(logits), 1))).argmax(1)
    fitted = cal.fit_temperature(logits, labels)
    assert fitted == pytest.approx(2.0, rel=0.05)
    assert (cal.scaled(logits, fitted).argmax(1) == logits.argmax(1)).all()
    assert cal.ece(cal.scaled(logits, fitted), labels) < cal.ece(cal.scaled(logits, 1), labels)
    # log p stands in for the logits: the softmax gives p back
    assert cal.scaled(cal.as_logits(PROBS), 1.0) == pytest.approx(PROBS)


def test_one_confidently_right_image_wants_the_coldest_temperature():
    """NLL of [2, 0] with label 0 falls as T falls: the search ends at its lower bound."""
    fitted = cal.fit_temperature(np.array([[2.0, 0.0]]), np.array([0]))
    assert cal.T_RANGE[0] <= fitted < 1.1 * cal.T_RANGE[0]


def run(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def test_calibrate_prints_the_test_sets_figures_with_the_validation_temperature(
    tiny_run, tmp_path, capsys
):
    import shutil

    from core import data as datasets
    from core.train import predict_logits

    root = tmp_path / "store"
    shutil.copytree(tiny_run.root, root)
    code, said, err = run(capsys, "calibrate", tiny_run.run_id, "--json", "--store", str(root))
    assert code == 0 and err == ""
    found = json.loads(said)
    assert set(found) == {"ece_before", "ece_after", "temperature", "nll_before", "nll_after"}
    store = Store(root)
    model, meta = store.load_model(tiny_run.run_id)
    data = datasets.load(from_dict(meta["config"]).data)
    val = predict_logits(model, data.x_val).numpy()
    by_hand = cal.summary(store.test_probs(tiny_run.run_id), data.y_test, val, data.y_val)
    assert found == pytest.approx(by_hand, rel=1e-6)
    assert found["nll_before"] == pytest.approx(meta["test"]["log_loss"], rel=1e-3)
    assert store.run_file(tiny_run.run_id, cal.VAL_LOGITS).is_file()  # kept for the page
    code, said, _ = run(capsys, "calibrate", tiny_run.run_id, "--store", str(root))
    assert code == 0 and said.splitlines()[0].startswith("temperature ")


def test_calibrate_refuses_what_is_not_a_classifier_run_in_one_line(tmp_path, capsys):
    code, said, err = run(capsys, "calibrate", "nope", "--store", str(tmp_path))
    assert code == 2 and said == "" and err.startswith("error: 'nope' is not a run id")
    code, _, err = run(capsys, "calibrate", "0" * 20, "--store", str(tmp_path))
    assert code == 2 and err == f"error: no run {'0' * 20} in {tmp_path}"
