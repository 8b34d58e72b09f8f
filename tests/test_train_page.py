"""The Train page as a teacher meets it: the form shows what is being trained (after Home's
Run, after a refresh), Start is off while a run is live, a finished run says what it scored
and where its mistakes are, a stopped run's last point sits where it stopped."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import streamlit as st
from conftest import ROOT, TINY, widget
from streamlit.testing.v1 import AppTest

from core import presets
from core.jobs import JobQueue
from core.store import Store

OWNER = "00112233445566aa"


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A new server on an empty store, with a queue that does not dispatch: jobs stay
    where a test puts them."""
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(tmp_path))
    st.cache_data.clear()
    st.cache_resource.clear()
    queue = JobQueue(Store(tmp_path), dispatch=False)
    yield queue
    st.cache_data.clear()
    st.cache_resource.clear()


def form(at: AppTest) -> dict:
    """What the form shows, by label."""
    shown = {"preset": at.selectbox(key="tr_preset").value}
    for kind in ("selectbox", "number_input", "select_slider", "slider", "checkbox"):
        shown |= {w.label: w.value for w in getattr(at, kind) if w.key != "tr_preset"}
    return shown


def expected(cfg) -> dict:
    """The form's values for ``cfg``, by label."""
    t = cfg.train
    return {"Model": cfg.model.name, "Dataset": cfg.data.dataset, "Epochs": t.epochs,
            "Batch size": t.batch_size, "Learning rate": t.lr, "Optimizer": t.optimizer,
            "Learning-rate schedule": t.schedule, "Seed": t.seed,
            "Label smoothing": t.label_smoothing}  # fmt: skip


def page(owner: str = OWNER, job: str | None = None, lang: str = "en") -> AppTest:
    """The Train page opened in the app (its navigation and links), with ``job`` in its URL."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["user"], at.query_params["lang"] = owner, lang
    if job:
        at.query_params["job"] = job
    at.switch_page("views/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("name", ["seed000-mlp", "seed002-cnn"])
def test_homes_run_opens_the_form_on_that_preset(server, name):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    next(b for b in at.button if b.key == f"preset_{name}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Train a network"]
    shown = form(at)
    assert shown["preset"] == name
    assert {k: shown[k] for k in expected(presets.get(name).config)} == expected(
        presets.get(name).config
    )
    # The form's Start is the same run the Home page queued (no second run).
    assert server.db.owned(at.session_state["user"])[0].cfg == presets.get(name).config


def test_a_refresh_during_training_shows_the_jobs_settings(server):
    cfg = replace(TINY, model=replace(TINY.model, hidden=(64, 32)),
                  train=replace(TINY.train, epochs=7, batch_size=128, seed=3, lr=1e-3))  # fmt: skip
    job = server.submit(cfg, OWNER)
    server.db.claim(job.id)  # running
    at = page(job=job.id)  # a new session: what a refresh or a reopened link is
    shown = form(at)
    assert shown["preset"] == "—"
    assert {k: shown[k] for k in expected(cfg)} == expected(cfg)
    assert widget(at, "text_input", "Hidden dense layers").value == "64,32"
    start = next(b for b in at.button if b.label == "Start")
    assert start.disabled  # one live run at a time from this page
    assert any(b.label == "Stop" for b in at.button)


def test_start_is_disabled_as_soon_as_the_run_is_queued(server):
    at = page()
    widget(at, "selectbox", "Dataset").set_value("digits")
    at.run()
    assert not next(b for b in at.button if b.label == "Start").disabled
    next(b for b in at.button if b.label == "Start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["job"]
    assert next(b for b in at.button if b.label == "Start").disabled


def test_a_bad_hidden_size_says_so_under_its_box_and_keeps_the_rest_of_the_form(server):
    """Every widget after it is still drawn and keeps its value; Start waits for a fix."""
    at = page()
    widget(at, "selectbox", "Model").set_value("mlp")
    at.run()
    widget(at, "checkbox", "Random horizontal flip").check()
    widget(at, "text_input", "Hidden dense layers").input("abc")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == [
        "Hidden layers are 1 to 8 whole numbers separated "
        "by commas, e.g. 50,50 or 3x75 (three layers of 75)."
    ]
    assert widget(at, "checkbox", "Random horizontal flip").value is True
    assert next(b for b in at.button if b.label == "Start").disabled
    widget(at, "text_input", "Hidden dense layers").input("100")
    at.run()
    assert not at.error and widget(at, "checkbox", "Random horizontal flip").value is True
    assert not next(b for b in at.button if b.label == "Start").disabled


def test_the_form_offers_sensible_ranges(server):
    at = page()
    lr = widget(at, "select_slider", "Learning rate")
    assert max(lr.options, key=float) == "10"  # far enough to diverge, not 10000
    l1 = widget(at, "select_slider", "L1 penalty")
    assert l1.options[0] == "off" and "0e+0" not in l1.options
    es = page(lang="es")
    assert widget(es, "select_slider", "Tasa de aprendizaje").options[:2] == ["1e-05", "3e-05"]
    assert "0,001" in widget(es, "select_slider", "Tasa de aprendizaje").options


def test_a_run_stopped_mid_epoch_plots_its_last_point_where_it_stopped(server):
    job = server.submit(TINY, OWNER)
    attempt = server.db.claim(job.id)
    history = {"epoch": [1, 2], "train_loss": [1.0, 0.8], "val_loss": [0.9, 0.7],
               "train_accuracy": [0.6, 0.7], "val_accuracy": [0.65, 0.72],
               "batch_step": [1, 4, 5], "batch_loss": [1.2, 1.0, 0.9]}  # fmt: skip
    progress = {"epoch": 2, "epochs": 2, "batch": 1, "batches": 4, "loss": 0.9,
                "images_per_second": 100.0, "eta": 1.0}  # fmt: skip
    server.db.update(job.id, attempt, {"state": "stopped", "message": "stopped by you",
                                       "history": history, "progress": progress})  # fmt: skip
    at = page(job=job.id)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    xs = [trace["x"] for trace in spec["data"] if trace.get("name") and len(trace["x"]) == 2]
    assert xs and all(x == [1, 1.25] for x in xs), xs  # a quarter into epoch 2


def test_a_finished_run_says_what_it_scored_and_links_to_evaluate(server, tiny_run):
    root = Store(server.store.root)
    shutil.copytree(Store(tiny_run.root).path(tiny_run.run_id), root.path(tiny_run.run_id))
    job = server.submit(tiny_run.cfg, OWNER)
    attempt = server.db.claim(job.id)
    server.db.update(job.id, attempt, {"state": "done", "run_id": tiny_run.run_id,
                                       "history": tiny_run.meta["history"]})  # fmt: skip
    at = page(job=job.id)
    acc = tiny_run.meta["test"]["accuracy"]
    assert any(f"Test accuracy {100 * acc:.1f}%" in s.value for s in at.success), at.success
    links = [link.proto.page for link in at.get("page_link")]
    assert any("evaluate" in link for link in links), links
    assert at.session_state["run"] == tiny_run.run_id  # Evaluate opens this run
    # Naming it: the name is kept beside the store and shown in the run's labels.
    widget(at, "text_input", "Name this run").input("  Ana's <b>first</b> net  ").run()
    assert root.names()[tiny_run.run_id] == "Ana's <b>first</b> net"


def test_a_refresh_on_a_stored_run_keeps_it_and_its_settings(server, tiny_run):
    """Home's Run on a preset already trained shows it at once; the URL names it, so a
    refresh shows it again, with its settings in the form."""
    shutil.copytree(Store(tiny_run.root).path(tiny_run.run_id),
                    server.store.path(tiny_run.run_id))  # fmt: skip
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["user"], at.query_params["stored"] = OWNER, tiny_run.run_id
    at.switch_page("views/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert {k: form(at)[k] for k in expected(TINY)} == expected(TINY)
    assert any("Already trained" in i.value for i in at.info)


def test_a_running_jobs_curves_are_drawn_anew_per_epoch_or_every_few_seconds(monkeypatch):
    """Between new figures the page sends the last one again (a new Plotly figure is what a
    live page costs the browser most); an epoch's end, the wait or the run's end draws."""
    from types import SimpleNamespace

    from ui import job_panel

    clock, built, sent = [100.0], [], []
    monkeypatch.setattr(job_panel, "st", SimpleNamespace(session_state={}))
    monkeypatch.setattr(job_panel.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(job_panel, "curves", lambda h, b: built.append(dict(h)) or object())
    where = SimpleNamespace(plotly_chart=lambda fig, key: sent.append((fig, key)))

    def redraw(epochs: int, running: bool = True, job: str = "j1", after: float = 1.0):
        clock[0] += after
        history = {"epoch": list(range(1, epochs + 1)), "batch_loss": [0.5] * (10 + epochs)}
        job_panel.live_curves(where, job, history, 100, running, "live")

    redraw(0)
    redraw(0)  # a second later: the same figure again
    assert len(built) == 1 and sent[1][0] is sent[0][0] and sent[1][1] == "live_j1"
    redraw(1)  # an epoch ended: drawn at once
    assert len(built) == 2
    redraw(1, after=job_panel.CHART_EVERY)  # the wait is over
    assert len(built) == 3
    redraw(1, job="j2")  # another job
    assert len(built) == 4 and sent[-1][1] == "live_j2"
    redraw(1, job="j2", running=False)  # it ended: its last curves, whole
    assert len(built) == 5


@pytest.mark.parametrize("lang, shown", [("en", "0.40"), ("es", "0,40")])
def test_decimal_sliders_write_the_languages_decimal_mark(server, lang, shown):
    """Streamlit's own slider wrote 0.40 on the Spanish page; ours write 0,40."""
    at = page(lang=lang)
    dropout = next(s for s in at.select_slider if s.label == "Dropout")
    smoothing = next(s for s in at.select_slider if s.key.endswith("label_smoothing"))
    assert shown in dropout.options and dropout.value == 0.4
    other = "." if lang == "es" else ","
    assert not [o for o in [*dropout.options, *smoothing.options] if other in o]


@pytest.mark.parametrize("kind", ["encrypted", "damaged"])
def test_a_zip_that_cannot_be_read_says_so_in_one_line_and_leaves_the_list(server, tmp_path,
                                                                           kind):  # fmt: skip
    """Issue 18: an upload kept from before (a password-protected or damaged zip) shows one
    clear line, no traceback, and is removed from the visitor's datasets."""
    from test_cli import _zips

    from core.data import uploads as photo_sets

    content = _zips(tmp_path)[kind].read_bytes()
    saved = photo_sets.save_upload(server.store.root, OWNER, f"{kind}.zip", content)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["user"], at.query_params["lang"] = OWNER, "en"
    at.session_state["train_dataset"] = str(saved)
    at.switch_page("views/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value.replace("\\", "") for e in at.error]  # Markdown escapes undone
    assert any(f"{kind}.zip" in e and ("password" in e or "damaged" in e) for e in errors)
    assert all("\n" not in e and "Traceback" not in e for e in errors)
    assert photo_sets.uploads(server.store.root, OWNER) == {}
