"""``python -m core bench time-to-accuracy``: any target, the preset suited to it, one clear
line for bad input. The speedrun's figures are measured by bench/speedrun.py, not here."""

from __future__ import annotations

import json

import pytest

from core import bench, cli, presets


@pytest.mark.parametrize(
    ("target", "preset", "epochs"),
    [(0.5, "fast", None), (0.90, "fast", None), (0.905, "fast", 6), (0.92, "fast", 10),
     (0.93, "best", 9),
     (0.94, "best", None), (0.99, "best", None), (1.0, "best", None)],
)  # fmt: skip
def test_every_target_gets_the_preset_suited_to_it(target, preset, epochs):
    assert bench.suited(target) == (preset, epochs)


def test_the_speedrun_plan_names_real_presets_in_rising_order():
    targets = [t for t, _, _ in bench.SPEEDRUN]
    assert targets == sorted(targets) and targets[-1] == 0.94
    for _, name, epochs in bench.SPEEDRUN:
        assert name in presets.PRESETS
        assert epochs is None or 1 <= epochs <= 100  # what --epochs accepts


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--target", "1.5"], "target must be"), (["--target", "0"], "target must be"),
     (["--epochs", "0"], "--epochs must be"), (["--seed", "-1"], "--seed must be"),
     (["--preset", "nope"], "unknown preset 'nope'")],
)  # fmt: skip
def test_bad_input_is_one_line_and_trains_nothing(args, words, capsys, monkeypatch):
    monkeypatch.setattr(bench, "time_to_accuracy", lambda *a: pytest.fail("it trained"))
    assert cli.main(["bench", "time-to-accuracy", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err


def test_a_short_run_reports_the_accuracy_it_reached_and_where(capsys):
    code = cli.main(["bench", "time-to-accuracy", "--target", "0.5", "--preset", "fast",
                     "--epochs", "1", "--seed", "3"])  # fmt: skip
    found = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and found["reached"] and found["test_accuracy"] >= 0.5
    assert (found["preset"], found["schedule_epochs"], found["epochs"], found["seed"]) == (
        "fast", 1, 1, 3)  # fmt: skip
    assert found["device"] == "cpu" and found["device_name"] and found["train_images"] == 50_000
