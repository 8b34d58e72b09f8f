"""A run leaves the app as ONNX (issue 20, item 5): ``python -m core export RUN --format onnx``
gives a file that onnxruntime runs to the same answers as PyTorch, on every model family.

The agreement is measured here with onnxruntime directly, not only through the exporter's own
check: the same top-1 class on 1,000 Fashion-MNIST test images and logits within 1e-4."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime
import pytest
from conftest import needs_fashion

from core import cli, models
from core import onnx_export as ox
from core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from core.models.base import InputSpec
from core.runs import Stored, train_or_load
from core.store import Store
from core.train import predict_logits

BACKBONES = {"efficientnet_lite0": 32, "resnet50": 32, "vgg16": 32, "inception_v3": 80}


def run(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def ort_logits(path, images: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.astype(np.float32) / 255.0})[0]


def test_a_run_exports_to_onnx_that_onnxruntime_runs_to_the_same_answers(
    tiny_run, tmp_path, capsys
):
    out, root = tmp_path / "model.onnx", tmp_path / "store"
    shutil.copytree(tiny_run.root, root)  # the export is kept beside the run
    code, said, err = run(capsys, "export", tiny_run.run_id, "--format", "onnx", "--out",
                          str(out), "--store", str(root))  # fmt: skip
    assert code == 0 and err == "", err
    assert said.startswith(f"exported {tiny_run.run_id} to {out} (onnx, ")
    assert "onnxruntime agrees on" in said and len(said.splitlines()) == 1
    model, meta = Store(root).load_model(tiny_run.run_id)
    images = ox._test_images(meta, 1000)
    theirs = ort_logits(out, images)
    ours = predict_logits(model, images).numpy()
    assert (theirs.argmax(1) == ours.argmax(1)).all()
    assert np.abs(theirs - ours).max() <= 1e-4
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert json.loads(props["classes"]) == meta["classes"]
    assert props["run_id"] == tiny_run.run_id
    assert len(ort_logits(out, images[:1])) == 1  # any batch size, one image included


def test_a_second_export_reuses_the_kept_file_and_delete_removes_it(tiny_run, tmp_path,
                                                                    monkeypatch):  # fmt: skip
    store = Store(tmp_path / "store")
    store.import_zip(Store(tiny_run.root).export_zip(tiny_run.run_id, tmp_path / "run.zip"))
    first, check = ox.export(store, tiny_run.run_id)
    kept = store.run_file(tiny_run.run_id, ox.FILE)
    assert kept.read_bytes() == first and check.passed

    def no_second_export(*_):
        raise AssertionError("exported again instead of reusing the kept file")

    monkeypatch.setattr(ox, "to_onnx", no_second_export)
    second, _ = ox.export(store, tiny_run.run_id)
    assert second == first
    store.delete(tiny_run.run_id)
    assert not kept.exists()


def test_a_kept_file_that_no_longer_agrees_is_made_again(tiny_run, tmp_path):
    store = Store(tmp_path / "store")
    store.import_zip(Store(tiny_run.root).export_zip(tiny_run.run_id, tmp_path / "run.zip"))
    good, _ = ox.export(store, tiny_run.run_id)
    kept = store.run_file(tiny_run.run_id, ox.FILE)
    other = RunConfig(TINY_DATA, ModelConfig("mlp", hidden=(8,)), TINY_TRAIN)
    stranger = next(e for e in train_or_load(other, store) if isinstance(e, Stored))
    kept.write_bytes(ox.export(store, stranger.run_id)[0])  # another model's answers
    again, check = ox.export(store, tiny_run.run_id)
    assert again == good and check.passed


TINY_DATA = DataConfig(dataset="digits", val_size=100, train_limit=256)
TINY_TRAIN = TrainConfig(epochs=1, batch_size=64, lr=3e-3, schedule="constant", bf16="off")


@pytest.mark.parametrize("name", [e.name for e in models.list_models()])
def test_every_model_family_exports_and_agrees(name):
    """Random weights at a small size: the graph of each family exports with any batch size."""
    options = {"encoder": "0" * 20} if name == "ae_classifier" else {}
    if name in BACKBONES:
        options["resolution"] = BACKBONES[name]
        spec = InputSpec(3, 32, 10, (0.5,) * 3, (0.25,) * 3)
    else:
        spec = InputSpec(1, 28, 10, (0.5,), (0.25,))
    token = models.PRETRAINED_WEIGHTS.set(False)
    try:
        model = models.build(ModelConfig(name, **options), spec).eval()
    finally:
        models.PRETRAINED_WEIGHTS.reset(token)
    meta = {"run_id": "0" * 20, "model": name, "dataset": {"name": "test"}, "test": {},
            "input": {"channels": spec.channels, "size": spec.size}}  # fmt: skip
    blob = ox.to_onnx(model, meta)
    images = np.random.default_rng(0).integers(0, 256, (5, spec.channels, 32, 32), np.uint8)
    images = images[..., : spec.size, : spec.size]
    check = ox.compare(model, blob, np.ascontiguousarray(images))
    assert check.images == 5 and check.passed, check


@needs_fashion
def test_a_fashion_cnn_agrees_on_1000_test_images(tmp_path, capsys):
    """The issue's check: same top-1 on all 1,000 and max abs logit difference <= 1e-4."""
    cfg = RunConfig(DataConfig(train_limit=2000), ModelConfig("fast"),
                    TrainConfig(epochs=1, batch_size=256, bf16="off"))  # fmt: skip
    store = Store(tmp_path / "store")
    stored = next(e for e in train_or_load(cfg, store) if isinstance(e, Stored))
    out = tmp_path / "fast.onnx"
    code, said, _ = run(capsys, "export", stored.run_id, "--format", "onnx", "--out", str(out),
                        "--store", str(store.root))  # fmt: skip
    assert code == 0, said
    assert "agrees on 1,000 test images" in said
    model, meta = store.load_model(stored.run_id)
    images = ox._test_images(meta, 1000)
    assert images.shape == (1000, 1, 28, 28)
    theirs, ours = ort_logits(out, images), predict_logits(model, images).numpy()
    assert (theirs.argmax(1) == ours.argmax(1)).sum() == 1000
    assert np.abs(theirs - ours).max() <= 1e-4


def test_an_export_that_disagrees_is_refused_in_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ox, "compare", lambda *a: ox.Check(10, 9, 0.5))
    out = tmp_path / "bad.onnx"
    store = tmp_path / "store"
    Store(store).import_zip(Store(tiny_run.root).export_zip(tiny_run.run_id, tmp_path / "r.zip"))
    code, said, err = run(capsys, "export", tiny_run.run_id, "--format", "onnx", "--out",
                          str(out), "--store", str(store))  # fmt: skip
    assert code == 2 and said == "" and len(err.splitlines()) == 1
    assert "disagrees with PyTorch (top-1 on 9 of 10" in err
    assert not out.exists()
    assert not Store(store).run_file(tiny_run.run_id, ox.FILE).exists()


def test_the_evaluate_page_prepares_the_onnx_file_then_offers_it(tiny_run, tmp_path, monkeypatch):
    """The page exports only when asked; the file is then kept, so the next visitor (here
    a new session) is offered the download at once, with its size."""
    import streamlit as st
    from conftest import ROOT
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "store"
    shutil.copytree(tiny_run.root, root)
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(root))

    def page(lang: str = "en") -> AppTest:
        st.cache_data.clear()
        st.cache_resource.clear()
        at = AppTest.from_file(str(ROOT / "views" / "evaluate.py"), default_timeout=120)
        at.session_state["lang"] = lang
        at.query_params["run"] = tiny_run.run_id
        return at.run()

    at = page()
    prepare = next(b for b in at.button if b.key == f"dl_onnx_{tiny_run.run_id}")
    assert prepare.label == "Prepare the ONNX file"
    assert not Store(root).run_file(tiny_run.run_id, ox.FILE).exists()  # not before asked
    prepare.click().run()
    assert not at.exception and not at.error
    assert "same class as PyTorch on all" in at.success[0].value
    offered = [b.label for b in at.get("download_button")]
    assert any(label.startswith("Download ONNX (") for label in offered), offered
    again = page("es")
    assert not any(b.key == f"dl_onnx_{tiny_run.run_id}" for b in again.button)
    assert any(b.label.startswith("Descargar ONNX (") for b in again.get("download_button"))
