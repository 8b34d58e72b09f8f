"""A numerics change must come with a version bump: the fingerprint of one training step.

A run's key (core.store.run_key) hashes declared versions, not source files: the model
family's version (core/models/catalog.py), ``core.tasks.TRAINER_VERSION`` and
``core.data.DATA_VERSION``. So a docstring or speed-only edit keeps every stored run, and a
change that alters the numbers must bump one of them, or stored runs would answer for code
that no longer gives them. This test trains every registered model for one step of a fixed
seed (the trainer itself, on 32 digits, core.accel off, one thread) and compares the
losses and a parameter sum with FINGERPRINTS (tests/fingerprints.json), keyed by the model,
its version and the trainer's and data's versions. A mismatch means the numbers changed:
bump the version of what changed and record the new fingerprints:

    .venv/bin/python tests/test_fingerprints.py --update     # or
    CNN_CLASSROOM_UPDATE_FINGERPRINTS=1 .venv/bin/pytest tests/test_fingerprints.py

Backbones are built without their pretrained weights (PRETRAINED_WEIGHTS off: torchvision's
random initialisation, nothing read or downloaded) at a small resolution: their code's
numbers are what is fingerprinted; the weights files are checked by hash where they load.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

FINGERPRINTS = Path(__file__).with_name("fingerprints.json")
UPDATE_ENV = "CNN_CLASSROOM_UPDATE_FINGERPRINTS"
DIGITS = {"dataset": "digits", "val_size": 32, "train_limit": 32}
STEP = {"epochs": 1, "batch_size": 32, "lr": 1e-3, "optimizer": "adam", "schedule": "constant",
        "bf16": "off", "device": "cpu", "seed": 0}  # fmt: skip
BACKBONE_RESOLUTION = {"inception_v3": 80}  # its smallest input; the others: 32
DIGITS_KEPT = 6  # significant digits recorded; compared to RTOL
RTOL = 2e-5  # one step on one thread: other CPUs' kernels (AVX2, AVX-512) agree this far


def _names() -> list[str]:
    from core import models

    return [e.name for e in models.list_models()]


def key(name: str) -> str:
    from core.store import versions

    v = versions(name)
    return f"{name} model/{v['model']} trainer/{v['trainer']} data/{v['data']}"


def fingerprint(name: str) -> dict[str, float]:
    """The numbers of one training step of ``name``: the training loss, the validation loss
    after the step, and the sum of the absolute values of every parameter after it."""
    import torch

    import core.data as datasets
    from core import models
    from core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from core.train import train

    options = {}
    if name == "ae_classifier":  # a run id to pass validation; train() starts from random
        options["encoder"] = "0" * 20  # weights (core.runs would load the encoder's)
    if name in ("efficientnet_lite0", "resnet50", "vgg16", "inception_v3"):
        options["resolution"] = BACKBONE_RESOLUTION.get(name, 32)
    cfg = RunConfig(DataConfig(**DIGITS), ModelConfig(name, **options), TrainConfig(**STEP))
    token = models.PRETRAINED_WEIGHTS.set(False)
    try:
        events = list(train(cfg, datasets.load(cfg.data)))
    finally:
        models.PRETRAINED_WEIGHTS.reset(token)
    done = events[-1]
    assert hasattr(done, "model"), f"{name}: the step did not finish ({type(done).__name__})"
    with torch.no_grad():
        weights = sum(p.double().abs().sum().item() for p in done.model.parameters())
    numbers = {"train_loss": done.history["train_loss"][-1],
               "val_loss": done.history["val_loss"][-1], "weights": weights}  # fmt: skip
    return {k: float(f"{v:.{DIGITS_KEPT}g}") for k, v in numbers.items()}


@pytest.fixture
def one_plain_thread(monkeypatch):
    """core.accel off and one intra-op thread: the plain layers' numbers, in one order."""
    import torch

    from core import accel
    from core import device as devices

    monkeypatch.setenv(accel.SWITCH, "off")
    monkeypatch.setenv(devices.THREADS_ENV, "1")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def recorded() -> dict:
    return json.loads(FINGERPRINTS.read_text()) if FINGERPRINTS.exists() else {}


def update(names: list[str]) -> dict:
    table = recorded()
    for name in names:
        table[key(name)] = fingerprint(name)
    FINGERPRINTS.write_text(json.dumps(dict(sorted(table.items())), indent=1) + "\n")
    return table


@pytest.mark.parametrize("name", _names())
def test_one_training_step_gives_the_recorded_numbers(name, one_plain_thread):
    if os.environ.get(UPDATE_ENV):
        update([name])
    table = recorded()
    got = fingerprint(name)
    hint = (f"the numbers of {name!r} changed ({key(name)}). If that is meant, bump the "
            "version of what changed (the family's in core/models/catalog.py, "
            "core.tasks.TRAINER_VERSION or core.data.DATA_VERSION) and record the new "
            "fingerprints: .venv/bin/python tests/test_fingerprints.py --update")  # fmt: skip
    assert key(name) in table, f"no fingerprint recorded for {key(name)}: {hint}"
    want = table[key(name)]
    assert set(got) == set(want), hint
    for what, value in want.items():
        assert math.isclose(got[what], value, rel_tol=RTOL), (
            f"{what} {got[what]} != {value}: {hint}"
        )


def test_the_table_holds_no_stale_rows():
    """Rows of versions no longer declared are dropped by ``--update``."""
    current = {key(name) for name in _names()}
    stale = sorted(set(recorded()) - current)
    assert not stale, f"stale fingerprints {stale}: run tests/test_fingerprints.py --update"


def main() -> None:
    """``--update [NAME ...]``: record the current fingerprints (all models by default) and
    drop the rows of versions no longer declared."""
    import torch

    from core import accel
    from core import device as devices

    args = sys.argv[1:]
    if not args or args[0] != "--update":
        raise SystemExit(__doc__)
    os.environ[accel.SWITCH] = "off"
    os.environ[devices.THREADS_ENV] = "1"
    torch.set_num_threads(1)
    names = args[1:] or _names()
    table = update(names)
    current = {key(name) for name in _names()}
    table = {k: v for k, v in table.items() if k in current}
    FINGERPRINTS.write_text(json.dumps(dict(sorted(table.items())), indent=1) + "\n")
    for name in names:
        print(key(name), table[key(name)])


if __name__ == "__main__":
    main()
