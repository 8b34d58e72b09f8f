"""The Experiments page: seed 003's ablations and a sweep run from the page, through the job
queue, with overlaid curves, bars, the parallel-coordinates chart and diverged runs marked."""

from __future__ import annotations

import time

import pytest
from conftest import fashion_available, open_page
from streamlit.testing.v1 import AppTest

from core.jobs import LIVE


def page(monkeypatch, root, lang: str = "en") -> AppTest:
    return open_page("experiments", monkeypatch, root, lang)


def wait_for_jobs(timeout: float = 300) -> None:
    from ui.state import jobs, store

    deadline = time.time() + timeout
    while time.time() < deadline:
        if jobs().count(LIVE) == 0:
            return
        time.sleep(0.2)
    pytest.fail(f"jobs still running after {timeout} s (store {store().root})")


def plotly_types(at: AppTest) -> list[str]:
    import json

    types = []
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        types += [trace.get("type", "scatter") for trace in spec["data"]]
    return types


@pytest.mark.parametrize("lang", ["en", "es"])
def test_the_page_opens_with_nothing_run(monkeypatch, tmp_path, lang):
    at = page(monkeypatch, tmp_path, lang)
    assert not at.exception, at.exception
    assert len(at.tabs) == 2
    hint = {"en": "Nothing run yet", "es": "Aún no hay nada"}[lang]
    assert sum(hint in c.value for c in at.caption) == 2  # both tabs
    run = {"en": "Run 11 variants", "es": "Ejecutar 11 variantes"}[lang]
    assert at.button(key="ab_run").label == run  # seed 003's whole set by default


def test_ablations_run_from_the_page_and_a_divergence_is_marked(monkeypatch, tmp_path):
    from ui.state import jobs

    at = page(monkeypatch, tmp_path)
    at.selectbox(key="ab_data").set_value("digits")
    at.number_input(key="ab_epochs").set_value(1)
    at.text_input(key="ab_widths").set_value("4,8,8,8")
    at.multiselect(key="ab_chosen").set_value(["full network", "no ReLU 1", "no stage 4"])
    at.run()
    assert at.button(key="ab_run").label == "Run 3 variants"
    at.button(key="ab_run").click().run()
    assert not at.exception, at.exception
    try:
        wait_for_jobs()
        at.run()
        assert not at.exception, at.exception
        table = at.dataframe[0].value
        assert list(table["variant"]) == ["full network", "no ReLU at stage 1",
                                          "no stage 4 (conv + pool)"]  # fmt: skip
        assert (table["state"] == "done").all()
        assert table["top-1 error"].between(0, 1).all()
        assert (table["top-5 error"] <= table["top-1 error"]).all()
        assert plotly_types(at).count("bar") == 2  # test top-1 and top-5 error
        assert plotly_types(at).count("scatter") == 3 * 3  # 3 panels x 3 variants

        # Far too high a learning rate: these two blow up in their first epoch (`python -m
        # core ablate --lr 1.0` on the same settings shows it), and the page says so.
        at.select_slider(key="ab_lr").set_value(1.0)
        at.multiselect(key="ab_chosen").set_value(["no ReLU 1", "no stage 4"])
        at.run()
        at.button(key="ab_run").click().run()
        wait_for_jobs()
        at.run()
        assert not at.exception, at.exception
        states = list(at.dataframe[0].value["state"])
        assert set(states) <= {"done", "diverged at epoch 1"} and "diverged at epoch 1" in states
        diverged = [w.value for w in at.warning if "diverged at epoch 1" in w.value]
        assert len(diverged) == states.count("diverged at epoch 1")
        assert "Nothing was stored" in diverged[0]
        assert plotly_types(at).count("bar") >= 1  # the hatched "diverged" bars

        # Run again: a diverged run is tried again, a stored one is not.
        queued = jobs().count()
        at.button(key="ab_run").click().run()
        wait_for_jobs()
        assert jobs().count() == queued + states.count("diverged at epoch 1")
        assert not list((tmp_path / "embeddings").glob("*-tsne-*.npy"))  # experiments skip maps
    finally:
        jobs().shutdown()


def test_seed_002s_sweep_from_the_preset_button(monkeypatch, tmp_path):
    from ui.state import jobs

    at = page(monkeypatch, tmp_path, "es")
    at.button(key="sw_seed002").click().run()
    assert at.selectbox(key="sw_model").value == "cnn_small"
    assert at.text_input(key="sw_values_0").value == "100|50,50|3x75"
    assert at.number_input(key="sw_epochs").value == 5
    assert at.selectbox(key="sw_limit").value == "todas"  # the whole training set, as seed 002
    at.selectbox(key="sw_data").set_value("digits")
    at.number_input(key="sw_epochs").set_value(1)
    at.run()
    assert at.button(key="sw_run").label == "Ejecutar 3 variantes"
    at.button(key="sw_run").click().run()
    try:
        wait_for_jobs()
        at.run()
        assert not at.exception, at.exception
        table = at.dataframe[-1].value
        assert sorted(table["Capas densas ocultas"]) == ["100", "50,50", "75,75,75"]  # in Spanish
        assert (table["estado"] == "terminado").all() or table["exactitud"].notna().all()
        assert "parcoords" in plotly_types(at)
    finally:
        jobs().shutdown()


def test_a_bad_grid_is_one_message(monkeypatch, tmp_path):
    at = page(monkeypatch, tmp_path)
    at.text_input(key="sw_values_0").set_value("100|lots")
    at.run()
    assert not at.exception, at.exception
    assert any("layer sizes look like 100, 50,50 or 3x75 (got 'lots')" in e.value
               for e in at.error)  # fmt: skip


def test_experiment_jobs_skip_the_map_other_jobs_compute_it(tmp_path):
    from dataclasses import replace

    from conftest import TINY

    from core.jobs import JobQueue
    from core.store import Store

    queue = JobQueue(Store(tmp_path))
    try:
        # One at a time: a worker skips the map while another job waits for it.
        plain = queue.wait(queue.submit(TINY, "me").id, 180)
        experiment = queue.submit(replace(TINY, train=replace(TINY.train, seed=1)), "me",
                                  map_after=False)  # fmt: skip
        experiment = queue.wait(experiment.id, 180)
        assert plain.state == experiment.state == "done"
    finally:
        queue.shutdown()
    maps = [p.name for p in (tmp_path / "embeddings").glob("*-tsne-*.npy")]
    assert any(name.startswith(plain.run_id) for name in maps)
    assert not any(name.startswith(experiment.run_id) for name in maps)


def test_training_set_sizes_fit_the_dataset(monkeypatch, tmp_path):
    """Digits has 1,797 images in all: no 5,000-image choice for it; Fashion-MNIST gets
    every size, written with the language's separators."""
    at = page(monkeypatch, tmp_path, "es")
    if fashion_available():  # else "fashion-mnist" falls back to digits
        assert at.selectbox(key="ab_limit").options[:3] == ["5.000", "10.000", "20.000"]
    at.selectbox(key="ab_data").set_value("digits").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="ab_limit").options == ["todas"]
