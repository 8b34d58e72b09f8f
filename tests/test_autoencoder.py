"""Seed 001's autoencoder lab: the two models, training and storing them, the command line,
the jobs' live reconstructions and the page. Tiny digits runs; the paper's figures on
Fashion-MNIST are measured by bench/seed001_bench.py."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import open_page

from core import UserError, models, seed001
from core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from core.models.base import InputSpec
from core.store import Store

DIGITS = DataConfig(dataset="digits", val_size=100, train_limit=512)


def ae_config(epochs: int = 3, **model) -> RunConfig:
    options = {"latent": 16, "dropout": 0.0, "pooling": True} | model
    return RunConfig(DIGITS, ModelConfig("conv_autoencoder", **options),
                     TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, optimizer="adam",
                                 schedule="constant", bf16="off"))  # fmt: skip


def classifier_config(encoder: str, mode: str, epochs: int = 2) -> RunConfig:
    return RunConfig(DIGITS, ModelConfig("ae_classifier", encoder=encoder, encoder_mode=mode),
                     TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, optimizer="adam",
                                 schedule="constant", bf16="off"))  # fmt: skip


def stored(cfg: RunConfig, store: Store):
    from core.runs import Stored, train_or_load

    last = list(train_or_load(cfg, store))[-1]
    assert isinstance(last, Stored)
    return last


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict:
    """A store with a tiny autoencoder and its three classifiers: {"store", "ae", modes...}."""
    store = Store(tmp_path_factory.mktemp("ae-store"))
    ae = stored(ae_config(), store)
    out = {"store": store, "ae": ae.run_id}
    for mode in ("finetune", "frozen", "random"):
        out[mode] = stored(classifier_config(ae.run_id, mode), store).run_id
    return out


# -- models --------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", [True, False])
def test_the_autoencoder_rebuilds_its_input_shape_in_0_1(pooling):
    model = models.build(ModelConfig("conv_autoencoder", latent=32, pooling=pooling),
                         InputSpec()).eval()  # fmt: skip
    x = torch.rand(4, 1, 28, 28)
    out = model(x)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert model.features(x).shape == (4, 32)
    flat = next(m for m in model.body if isinstance(m, torch.nn.Linear)).in_features
    assert flat == (32 * 7 * 7 if pooling else 32 * 28 * 28)
    pools = sum(isinstance(m, torch.nn.MaxPool2d) for m in model.body)
    assert pools == (2 if pooling else 0)
    assert models.get("conv_autoencoder").task == "reconstruct"


def test_the_classifier_body_is_the_autoencoders_encoder():
    ae = models.build(ModelConfig("conv_autoencoder", latent=24), InputSpec())
    cls = models.build(ModelConfig("ae_classifier", latent=24, encoder="x"), InputSpec())
    cls.body.load_state_dict(ae.body.state_dict(), strict=True)  # same layers, same shapes
    assert cls(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert models.get("ae_classifier").task == "classify"
    assert models.get("conv_autoencoder").task == "reconstruct"


def test_sides_not_divisible_by_4_are_refused():
    with pytest.raises(UserError, match="divisible by 4"):
        models.build(ModelConfig("conv_autoencoder"), InputSpec(size=30))


def test_both_models_name_seed_001():
    for name in ("conv_autoencoder", "ae_classifier"):
        assert "seed 001" in models.get(name).summary


# -- training and the store ----------------------------------------------------------------


def test_an_autoencoder_run_learns_and_stores_its_test_mse(lab):
    meta = lab["store"].meta(lab["ae"])
    assert meta["task"] == "reconstruct"
    history = meta["history"]
    assert "train_accuracy" not in history and "val_accuracy" not in history
    assert history["val_loss"][-1] < history["val_loss"][0]
    model, _ = lab["store"].load_model(lab["ae"])
    from core import data as datasets
    from core.train import reconstruction_mse

    data = datasets.load(DIGITS)
    assert meta["test"]["mse"] == pytest.approx(reconstruction_mse(model, data.x_test), rel=1e-5)
    assert meta["test"]["support"] == len(data.y_test)


def test_encoder_modes_start_from_the_autoencoder_or_not(lab):
    store = lab["store"]
    ae, _ = store.load_model(lab["ae"])
    for mode in ("finetune", "frozen", "random"):
        model, meta = store.load_model(lab[mode])
        assert meta["config"]["model"]["latent"] == 16  # taken from the encoder run
        assert meta["config"]["model"]["encoder_mode"] == mode
        pairs = zip(model.body.state_dict().values(), ae.body.state_dict().values(), strict=True)
        same = [torch.equal(a, b) for a, b in pairs]
        if mode == "frozen":
            assert all(same)  # only the head trained
        else:
            assert not all(same)  # trained on (finetune) or never loaded (random)
    from core.runs import plan, start_weights

    cfg = plan(classifier_config(lab["ae"], "finetune"), store).cfg
    init = start_weights(cfg, store)
    assert all(torch.equal(init[k], v) for k, v in ae.body.state_dict().items())
    assert start_weights(plan(classifier_config(lab["ae"], "random"), store).cfg, store) is None


def test_a_classifier_needs_a_stored_autoencoder_with_the_same_architecture(lab):
    from core.runs import plan

    store = lab["store"]
    with pytest.raises(UserError, match="no conv_autoencoder run"):
        plan(classifier_config("f" * 20, "finetune"), store)
    with pytest.raises(UserError, match="no conv_autoencoder run"):  # a classifier's id
        plan(classifier_config(lab["finetune"], "finetune"), store)
    wrong = classifier_config(lab["ae"], "finetune")
    wrong = replace(wrong, model=replace(wrong.model, latent=64))
    with pytest.raises(UserError, match="latent 16, not 64"):
        plan(wrong, store)
    with pytest.raises(UserError, match="needs --encoder"):
        plan(replace(wrong, model=ModelConfig("ae_classifier")), store)


# -- jobs: reconstructions after each epoch ------------------------------------------------


def test_an_autoencoder_job_shows_its_reconstructions_after_every_epoch(tmp_path):
    from core.jobs import JobQueue
    from core.tasks import PREVIEW

    queue = JobQueue(Store(tmp_path), precompute_maps=False)
    try:
        job = queue.submit(ae_config(epochs=3), "teacher")
        seen = set()
        deadline = time.time() + 120
        while not job.is_final and time.time() < deadline:
            if job.preview:
                seen.add(job.preview["epoch"])
            time.sleep(0.01)
            job = queue.get(job.id)
        assert job.state == "done", job.message
        snap = job.snapshot()["preview"]
        assert snap["epoch"] == 3 and seen <= {1, 2, 3}
        assert snap["originals"].shape == snap["reconstructions"].shape == (PREVIEW, 1, 28, 28)
        assert snap["reconstructions"].dtype == np.uint8
        assert "train_accuracy" not in job.snapshot()["history"]
    finally:
        queue.shutdown()


# -- the command line ----------------------------------------------------------------------

CLI_DIGITS = ["--dataset", "digits", "--val-size", "100", "--train-limit", "512", "--quiet",
              "--no-map", "--epochs", "2", "--batch-size", "64", "--bf16", "off"]  # fmt: skip


def test_the_command_line_trains_both_and_reports_mse_then_accuracy(run_cli, tmp_path):
    ae_json, cls_json = tmp_path / "ae.json", tmp_path / "c.json"
    out = run_cli("train", "--model", "conv_autoencoder", "--latent", "8", "--no-pooling",
                  "--dropout", "0.05", *CLI_DIGITS, "--json", str(ae_json))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "test MSE" in out.stdout
    ae = json.loads(ae_json.read_text())
    assert 0 < ae["test"]["mse"] < 1 and ae["config"]["model"]["pooling"] is False
    out = run_cli("train", "--model", "ae_classifier", "--encoder", ae["run_id"],
                  "--encoder-mode", "frozen", *CLI_DIGITS, "--json", str(cls_json))  # fmt: skip
    assert out.returncode == 0, out.stderr
    cls = json.loads(cls_json.read_text())
    assert 0 <= cls["test"]["accuracy"] <= 1 and cls["config"]["model"]["latent"] == 8
    bad = run_cli("train", "--model", "ae_classifier", "--encoder", "nope", *CLI_DIGITS)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "no conv_autoencoder run" in bad.stderr


def test_paper_numbers_are_found_for_the_papers_settings():
    def config(latent, dropout, lr, pooling=True) -> dict:
        from core.config import to_dict

        return to_dict(seed001.autoencoder(latent, dropout, lr, pooling))

    assert seed001.paper_mse(config(512, 0.2, 1e-3)) == ("Table 1", 0.020)
    assert seed001.paper_mse(config(128, 0.15, 1e-3)) == ("Table 2", 0.031)
    assert seed001.paper_mse(config(128, 0.05, 1e-2)) == ("Table 3", 0.042)
    # The appendix's setting is also Table 2's p = 0.1: the table is named first.
    assert seed001.paper_mse(config(128, 0.1, 1e-3)) == ("Table 2", 0.024)
    assert seed001.paper_mse(config(128, 0.1, 1e-3, False)) == ("appendix, without pooling",
                                                                0.004)  # fmt: skip
    assert seed001.paper_mse(config(100, 0.1, 1e-3)) is None
    assert [v for v, _ in seed001.sweep("n", 1)] == [64, 128, 256, 512]
    assert all(c.train.batch_size == 100 and c.train.optimizer == "adam"
               for _, c in seed001.sweep("lr", 1))  # fmt: skip


# -- the page ------------------------------------------------------------------------------


def page(monkeypatch, root: Path, lang: str = "en"):
    return open_page("autoencoder", monkeypatch, root, lang, timeout=180)


@pytest.mark.parametrize("lang", ["en", "es"])
def test_the_page_shows_the_map_tables_and_the_three_way_comparison(lab, monkeypatch, lang):
    at = page(monkeypatch, lab["store"].root, lang)
    assert not at.exception, at.exception
    assert len(at.tabs) == 4
    body = " ".join(m.value for m in at.markdown)
    assert ("Table 1" if lang == "en" else "Tabla 1") in body
    frames = [e.value for e in at.dataframe]
    table_1 = frames[0]
    assert list(table_1.iloc[:, 1]) == list(seed001.TABLE_1.values())  # the paper's column
    accuracy = {"en": "test accuracy", "es": "exactitud en prueba"}[lang]
    three = next(f for f in frames if accuracy in f.columns)  # finetune, frozen, random
    assert len(three) == 3 and three.iloc[:, 1].between(0, 1).all()
    meta = {m: lab["store"].meta(lab[m]) for m in ("finetune", "frozen", "random")}
    assert sorted(three.iloc[:, 1]) == pytest.approx(sorted(m["test"]["accuracy"]
                                                            for m in meta.values()))  # fmt: skip
    charts = [c for c in at.get("plotly_chart")]
    assert len(charts) >= 6  # map, three table charts, comparison, confusion


def test_the_page_trains_an_autoencoder_and_shows_its_reconstructions(monkeypatch, tmp_path):
    from ui.state import jobs

    at = page(monkeypatch, tmp_path)
    at.selectbox(key="ae_dataset").set_value("digits")
    at.number_input[0].set_value(2)
    at.button(key="ae_start").click().run()
    assert not at.exception, at.exception
    queue = jobs()
    try:
        job = queue.wait(at.session_state["ae_job"], 180)
        assert job.state == "done", job.message
        assert job.preview["epoch"] == 2
        at.run()
        assert not at.exception, at.exception
        assert any("Test MSE" in s.value for s in at.success)
        # Start again with the same settings: the stored run shows at once.
        at.button(key="ae_start").click().run()
        assert at.session_state["ae_job_stored"] == job.run_id
        assert len(at.get("image")) >= 1  # originals over reconstructions
    finally:
        queue.shutdown()
    assert math.isfinite(Store(tmp_path).meta(job.run_id)["test"]["mse"])


def test_the_tables_say_which_runs_fill_them_and_mark_the_papers_typo(monkeypatch, tmp_path):
    """The "ours" cells count only runs of exactly the chosen epochs, and the page says so
    and where others are; Table 2's 0.200 for p = 0.05 is marked, not drawn as a spike."""
    recipe = seed001.autoencoder
    small = DataConfig(dataset="digits", val_size=100, train_limit=256)

    def on_small_digits(*args, **kwargs):  # the tables' runs, on a small dataset
        if len(args) < 6:
            kwargs["data"] = kwargs.get("data") or small
        return recipe(*args, **kwargs)

    monkeypatch.setattr(seed001, "autoencoder", on_small_digits)
    store = Store(tmp_path)
    stored(dict(seed001.sweep("p", 1))[0.1], store)  # one cell of Table 2, at 1 epoch
    at = page(monkeypatch, tmp_path)
    captions = " ".join(c.value for c in at.caption)
    assert "0 of 13 are" in captions and "at 1 epochs" in captions, captions
    at.number_input(key="ae_sweep_epochs").set_value(1).run()
    captions = " ".join(c.value for c in at.caption)
    # Table 2's p = 0.1 is also the appendix's pooled setting: one run, two cells.
    assert "2 of 13 are" in captions and "at 1 epochs" not in captions, captions
    table_2 = next(f.value for f in at.dataframe if "p" in f.value.columns)
    assert table_2["ours"].notna().tolist() == [False, True, False, False]
    assert "the paper prints 0.200" in captions and "most likely a misplaced digit" in captions
    chart = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                 if "ae_chart_p" in c.proto.id)  # fmt: skip
    paper, ours, likely = chart["data"]
    assert paper["y"][0] is None and paper["y"][1:] == [0.024, 0.031, 0.036]
    assert likely["y"][0] == 0.020 and likely["marker"]["symbol"] == "circle-open"
    assert ours["y"][1] is not None and ours["y"][0] is None
