"""The command line: listings, training with the store, and one-line errors."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
from conftest import run_core

from core import cli, models, presets
from core.store import WEIGHTS, Store

DIGITS = ["--dataset", "digits", "--val-size", "200"]
TRAIN = ["train", "--model", "cnn_bn", *DIGITS, "--epochs", "1", "--quiet"]
REPORT_HEADER = "precision    recall  f1-score   support"


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    return lines[0]


# -- listings -------------------------------------------------------------------------------


def test_models_lists_the_registry(run_cli):
    result = run_cli("models")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert {"mlp", "cnn_bn", "cnn_small", "fast"} <= set(names)
    assert names == [e.name for e in models.list_models()]


def test_presets_lists_fast_and_the_papers(run_cli):
    result = run_cli("presets")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert "fast" in names and names == list(presets.PRESETS)
    assert "0.8978" in result.stdout  # seed 000's reported accuracy sits beside its preset


# -- training -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One CLI training run into a module store: (CompletedProcess, JSON payload, store)."""
    tmp = tmp_path_factory.mktemp("cli")
    store = tmp / "store"
    result = run_core(*TRAIN, "--store", str(store), "--json", str(tmp / "out.json"))
    assert result.returncode == 0, result.stderr
    return result, json.loads((tmp / "out.json").read_text()), store


@pytest.mark.slow
def test_train_prints_a_report_and_writes_json(trained):
    result, payload, store = trained
    out = result.stdout
    assert "trained and stored" in out and "cache hit" not in out
    assert REPORT_HEADER in out
    for row in ("macro avg", "weighted avg", "accuracy", "top-3 accuracy", "ROC-AUC"):
        assert row in out
    for digit in "0123456789":
        assert any(line.split()[:1] == [digit] for line in out.splitlines()), digit

    assert {"run_id", "model", "config", "history", "test", "wall_seconds", "cache_hit"} <= set(
        payload
    )
    assert payload["cache_hit"] is False and payload["model"] == "cnn_bn"
    assert payload["config"]["train"]["epochs"] == 1
    assert payload["config"]["data"]["dataset"] == "digits"
    assert len(payload["history"]["epoch"]) == 1
    test = payload["test"]
    for key in ("accuracy", "macro_f1", "weighted_f1", "top3_accuracy", "roc_auc_macro"):
        assert 0 <= test[key] <= 1, key
    assert len(test["confusion_matrix"]) == 10
    assert sum(map(sum, test["confusion_matrix"])) == test["support"]
    assert set(test["per_class"]) == set("0123456789")
    assert f"{test['accuracy']:.4f}" in out  # the printed report is the stored one
    assert (store / "runs" / payload["run_id"] / WEIGHTS).is_file()
    assert payload["run_id"] in out


@pytest.mark.slow
def test_same_command_again_is_a_cache_hit(trained, tmp_path):
    _, first, store = trained
    result = run_core(*TRAIN, "--store", str(store), "--json", str(tmp_path / "again.json"))
    assert result.returncode == 0, result.stderr
    assert "cache hit" in result.stdout and REPORT_HEADER in result.stdout
    payload = json.loads((tmp_path / "again.json").read_text())
    assert payload["cache_hit"] is True
    assert payload["run_id"] == first["run_id"]
    assert payload["test"] == first["test"] and payload["history"] == first["history"]


@pytest.mark.slow
def test_garbage_weights_are_retrained(trained, tmp_path):
    _, first, original = trained
    store = tmp_path / "store"
    shutil.copytree(original, store)
    (store / "runs" / first["run_id"] / WEIGHTS).write_bytes(b"not safetensors at all")
    result = run_core(*TRAIN, "--store", str(store), "--json", str(tmp_path / "re.json"))
    assert result.returncode == 0, result.stderr
    assert "trained and stored" in result.stdout
    payload = json.loads((tmp_path / "re.json").read_text())
    assert payload["cache_hit"] is False and payload["run_id"] == first["run_id"]
    assert Store(store).meta(first["run_id"]) is not None  # the entry is whole again


def test_divergence_is_reported_and_nothing_stored(run_cli, tmp_path):
    store = tmp_path / "store"
    out = tmp_path / "diverged.json"
    result = run_cli(*TRAIN, "--lr", "1e4", "--store", str(store), "--json", str(out))
    assert result.returncode not in (0, 2)
    assert "diverged" in result.stderr and "Traceback" not in result.stderr
    runs = store / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []
    assert json.loads(out.read_text())["status"] == "diverged"


# -- bad input ------------------------------------------------------------------------------

BAD = {
    "unknown model": (["--model", "resnet9000"], "resnet9000"),
    "epochs 0": (["--epochs", "0"], "epochs"),
    "lr 0": (["--lr", "0"], "learning rate"),
    "lr nan": (["--lr", "nan"], "learning rate"),
    "batch 0": (["--batch-size", "0"], "batch size"),
    "no such dataset": (["--dataset", "/no/such/path"], "/no/such/path"),
}
VALID_NAMES = ("mlp", "cnn_bn", "cnn_small", "fast")


@pytest.mark.parametrize("case", ["unknown model", "lr nan"])
def test_bad_input_process_exits_2_with_one_line(run_cli, case, tmp_path):
    flags, mentions = BAD[case]
    result = run_cli(*TRAIN, *flags, "--store", str(tmp_path / "store"))
    assert result.returncode == 2
    line = one_error_line(result)
    assert mentions in line
    if case == "unknown model":
        assert all(name in line for name in VALID_NAMES)
    assert not (tmp_path / "store" / "runs").exists()


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_2_with_one_line(case, capsys, tmp_path):
    """The same checks through ``cli.main`` in this process (what ``python -m core`` runs)."""
    flags, mentions = BAD[case]
    code = cli.main([*TRAIN, *flags, "--store", str(tmp_path / "store")])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert mentions in lines[0]
    if case == "unknown model":
        assert all(name in lines[0] for name in VALID_NAMES)
    assert not (tmp_path / "store" / "runs").exists()


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(["--val-size", "0"], id="val size 0"),
        pytest.param(["--train-limit", "0"], id="train limit 0"),
        pytest.param(["--optimizer", "rmsprop"], id="optimizer"),
        pytest.param(["--label-smoothing", "1"], id="label smoothing 1"),
        pytest.param(["--dropout", "1"], id="dropout 1"),
        pytest.param(["--hidden", "0"], id="hidden 0"),
        pytest.param(["--device", "tpu"], id="device"),
        pytest.param(
            ["--hidden", "0x5"],
            id="hidden 0x5",
        ),
        pytest.param(
            ["--schedule", "step", "--step-size", "0"],
            id="step size 0",
        ),
        pytest.param(
            ["--optimizer", "sgd", "--momentum", "-1"],
            id="negative momentum",
        ),
    ],
)
def test_more_bad_flags(flags, capsys, tmp_path):
    base = ["train", "--model", "mlp", *DIGITS, "--epochs", "1", "--train-limit", "128"]
    code = cli.main([*base, "--quiet", "--store", str(tmp_path / "store"), *flags])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--preset", "nope"], id="unknown preset"),
        pytest.param(["--preset", "fast", "--model", "mlp"], id="preset trains another model"),
        pytest.param([], id="no model"),
    ],
)
def test_model_choice_errors(args, capsys):
    assert cli.main(["train", *DIGITS, *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")


def test_flags_build_the_run_config():
    flags = "--model cnn_small --hidden 3x75 --lr 0.01 --epochs 4 --optimizer sgd --hflip"
    args = cli.parser().parse_args(["train", *flags.split(), *DIGITS])
    cfg = cli.build_config(args)
    assert cfg.model.name == "cnn_small" and cfg.model.hidden == (75, 75, 75)
    assert cfg.train.lr == 0.01 and cfg.train.epochs == 4 and cfg.train.optimizer == "sgd"
    assert cfg.train.hflip is True and cfg.train.oversample is False
    assert cfg.data.dataset == "digits" and cfg.data.val_size == 200
    # A preset, then the flags given beside it.
    fast = presets.get("fast").config
    cfg = cli.build_config(cli.parser().parse_args(["train", "--preset", "fast", "--lr", "1"]))
    assert cfg == replace(fast, train=replace(fast.train, lr=1.0))


def test_unparseable_flag_exits_2(capsys):
    assert cli.main(["train", "--model", "mlp", "--hidden", "lots"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: argument --hidden: layer sizes look")


def _zips(folder) -> dict:
    """A two-class zip of PNGs, the same zip marked as encrypted, and one whose deflated data
    is damaged (each file's CRC and deflate stream cannot both survive flipped bytes)."""
    import io
    import zipfile

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    pngs = {}
    for c in "ab":
        for i in range(6):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(buf, "PNG")
            pngs[f"{c}/{i}.png"] = buf.getvalue() * 3  # repeated: deflate has work to do
    good = folder / "good.zip"
    with zipfile.ZipFile(good, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in pngs.items():
            z.writestr(name, data)
    raw = bytearray(good.read_bytes())
    damaged = bytearray(raw)
    for k in range(200, 400):
        damaged[k] ^= 0x55
    for sig, flag in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the "encrypted" bit
        at = 0
        while (at := raw.find(sig, at)) >= 0:
            raw[at + flag] |= 1
            at += 4
    (folder / "encrypted.zip").write_bytes(raw)
    (folder / "damaged.zip").write_bytes(damaged)
    return {"encrypted": folder / "encrypted.zip", "damaged": folder / "damaged.zip"}


@pytest.mark.parametrize(
    "case, mentions",
    [
        ("encrypted", "password"),
        ("damaged", "damaged"),
        ("val size", "more than this dataset has"),
        ("json folder", "does not exist"),
    ],
)
def test_bad_files_and_sizes_are_one_line(case, mentions, capsys, tmp_path):
    """Issue 18: an encrypted or damaged zip, a validation set larger than the data and a
    --json file in a missing folder: one line on stderr and exit 2, nothing trained."""
    zips = _zips(tmp_path)
    flags = {"encrypted": ["--dataset", str(zips["encrypted"])],
             "damaged": ["--dataset", str(zips["damaged"])],
             "val size": ["--dataset", "digits", "--val-size", "5000"],
             "json folder": [*DIGITS, "--json", str(tmp_path / "nope" / "r.json")]}  # fmt: skip
    flags = flags[case]
    base = ["train", "--model", "mlp", "--epochs", "1", "--quiet"]
    code = cli.main([*base, *flags, "--store", str(tmp_path / "store")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert mentions in lines[0]
    assert not (tmp_path / "store" / "runs").exists()


@pytest.mark.parametrize(
    "error, mentions",
    [
        (OSError(28, "No space left on device", "/store/runs/x"), "No space left on device"),
        (MemoryError(), "not enough memory"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory\nmore"), "can't allocate"),
        (ValueError("bad shape\nin a traceback"), "bad shape"),
    ],
)
def test_what_fails_deep_down_is_still_one_line(error, mentions, capsys, monkeypatch):
    """A full disk or an allocation failure while training: one line and exit 2, never a
    traceback (the command's top-level handler)."""

    def fail(args):
        raise error

    monkeypatch.setattr(cli, "cmd_train", fail)
    code = cli.main(["train", "--model", "mlp", *DIGITS])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert mentions in lines[0]
