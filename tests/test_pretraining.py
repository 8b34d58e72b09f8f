"""What pretraining buys (issue 21, item 3): the same labelled sets from scratch, on seed
001's autoencoder and on ImageNet features; ``python -m core bench pretraining`` prints the
table and one JSON line; the page draws one line per start and queues what is missing."""

from __future__ import annotations

import json

import pytest
import streamlit as st
from conftest import ROOT
from streamlit.testing.v1 import AppTest

from core import UserError, cli, pretraining
from core.classroom import Classroom
from core.jobs import JobQueue
from core.store import Store


def test_each_labelled_set_gets_its_three_starts_and_about_the_same_steps():
    cells = pretraining.cells("a" * 20, (100, 5000))
    assert [(c.start, c.labels) for c in cells] == [
        ("scratch", 100), ("autoencoder", 100), ("imagenet", 100),
        ("scratch", 5000), ("autoencoder", 5000), ("imagenet", 5000),
    ]  # fmt: skip
    scratch, pretrained, imagenet = cells[:3]
    assert scratch.cfg.model.encoder_mode == "random" and scratch.cfg.model.encoder == "a" * 20
    assert pretrained.cfg.model.encoder_mode == "finetune"
    assert imagenet.cfg.model.name == "efficientnet_lite0" and imagenet.cfg.model.tune == "frozen"
    assert {c.cfg.data.train_limit for c in cells[:3]} == {100}
    assert {c.cfg.data.val_size for c in cells} == {pretraining.VAL}
    for n in (100, 500, 1000, 5000):
        batch, epochs = pretraining.schedule(n)
        steps = epochs * -(-n // batch)
        assert 0.8 * pretraining.STEPS <= steps <= 1.7 * pretraining.STEPS, (n, batch, epochs)
    ae = pretraining.autoencoder()
    assert ae.data.train_limit is None and ae.model.name == "conv_autoencoder"


@pytest.mark.parametrize(
    ("text", "said"),
    [("abc", "numbers of labelled images"), ("5", "at least 10"), ("100,99999", "has 500")],
)
def test_labels_are_checked_in_one_line(text, said):
    with pytest.raises(UserError, match=said):
        pretraining.parse_labels(text, available=500)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A store holding the study on digits (sets of 50 and 100 images), at about 20 steps a
    run with 100 validation images: the whole study in seconds."""
    from core import bench

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pretraining, "STEPS", 20)
        mp.setattr(pretraining, "VAL", 100)
        root = tmp_path_factory.mktemp("pretraining-store")
        bench.pretraining((50, 100), Store(root), "digits", 1, progress=lambda line: None)
        yield root


def test_the_bench_prints_the_table_and_one_json_line(small, capsys):
    code = cli.main(["bench", "pretraining", "--labels", "50,100", "--dataset", "digits",
                     "--ae-epochs", "1", "--store", str(small)])  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    found = json.loads(out[-1])
    assert [r["labels"] for r in found["rows"]] == [50, 100]
    header = next(i for i, line in enumerate(out) if line.split()[:1] == ["labelled"])
    assert out[header].split() == ["labelled", "scratch", "autoencoder", "imagenet"]
    for line, row in zip(out[header + 1 : header + 3], found["rows"], strict=True):
        assert line.split() == [str(row["labels"])] + [f"{row[s]:.4f}" for s in pretraining.STARTS]
    store = Store(small)
    for row in found["rows"]:
        for start in pretraining.STARTS:
            meta = store.meta(row[f"{start}_run"])
            assert meta["test"]["accuracy"] == row[start]
            assert meta["config"]["data"]["train_limit"] == row["labels"]
    assert found["seed001_accuracy"] == 0.91
    assert found["seconds"] < 30  # the fixture trained them: all answered from the store


def test_the_bench_refuses_bad_input_in_one_line(tmp_path, capsys):
    code = cli.main(["bench", "pretraining", "--labels", "10,100000", "--dataset", "digits",
                     "--store", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --labels: the training split has")


def test_the_page_charts_the_stored_runs_and_queues_what_is_missing(small, monkeypatch):
    import ui.state

    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(small))
    st.cache_data.clear()
    st.cache_resource.clear()
    queue = JobQueue(Store(small), dispatch=False)
    monkeypatch.setattr(ui.state, "jobs", lambda: queue)
    at = AppTest.from_file(str(ROOT / "views" / "pretraining.py"), default_timeout=60)
    at.session_state["user"], at.session_state["lang"] = "00112233445566aa", "es"
    at.session_state["pt_dataset"], at.session_state["pt_ae_epochs"] = "digits", 1
    at.session_state["pt_labels_digits"] = [100]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [trace["name"] for trace in chart["data"]]
    assert names == ["desde cero", "sobre el autocodificador", "sobre características de ImageNet"]
    assert all(trace["x"] == [100] for trace in chart["data"])  # 100: the sets stored above
    assert list(at.dataframe[0].value["estado del entrenamiento"]) == ["hecho"] * 3
    next(b for b in at.button if b.label == "Entrenar lo que falta").click().run()
    assert queue.jobs("00112233445566aa") == []  # all three stored: nothing to train
    assert len(Classroom(Store(small)).board(best_only=False)) == 3  # handed in, for the board
    at.session_state["pt_ae_epochs"] = 2  # a new autoencoder: nothing of it is stored
    at.run()
    next(b for b in at.button if b.label == "Entrenar lo que falta").click().run()
    assert not at.exception
    (job,) = queue.jobs("00112233445566aa")
    assert job.cfg.model.name == "conv_autoencoder" and job.cfg.train.epochs == 2
    assert "Primero el autocodificador (2 épocas" in at.info[0].value
    st.cache_data.clear()
    st.cache_resource.clear()


def test_a_photo_dataset_gets_the_same_study(tmp_path, monkeypatch, capsys):
    """A folder of class folders: studied at 64 pixels, its validation its usual share."""
    from test_backbone import write_photos

    monkeypatch.setattr(pretraining, "STEPS", 10)
    photos = write_photos(tmp_path / "bugs", per_class=40)
    assert pretraining.data_of(str(photos)).image_size == pretraining.PHOTO_SIDE
    assert pretraining.sizes_for(str(photos), 50) == (10, 20)
    assert pretraining.sizes_for(str(photos), 8) == (8,)
    code = cli.main(["bench", "pretraining", "--labels", "10,20", "--dataset", str(photos),
                     "--ae-epochs", "1", "--store", str(tmp_path / "store")])  # fmt: skip
    found = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and [r["labels"] for r in found["rows"]] == [10, 20]
    meta = Store(tmp_path / "store").meta(found["rows"][0]["imagenet_run"])
    assert meta["classes"] == ["ants", "bees"] and meta["config"]["data"]["train_limit"] == 10


def test_the_page_offers_a_teachers_photo_folder_with_its_own_sizes(tmp_path, monkeypatch):
    from test_backbone import write_photos

    from core.data import uploads as photo_sets

    write_photos(tmp_path / "class" / "bugs", per_class=40)
    monkeypatch.setenv(photo_sets.ENV_FOLDERS, str(tmp_path / "class"))
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(tmp_path / "store"))
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "views" / "pretraining.py"), default_timeout=60)
    at.session_state["user"], at.session_state["lang"] = "00112233445566aa", "en"
    at.run()
    at.selectbox(key="pt_dataset").set_value(str((tmp_path / "class" / "bugs").resolve())).run()
    assert not at.exception, [e.value for e in at.exception]
    (sizes,) = at.multiselect
    assert sizes.options == ["10", "20", "50"] and sizes.value == [10, 20, 50]
    st.cache_data.clear()
    st.cache_resource.clear()
