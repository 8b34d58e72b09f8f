"""Embeddings that move while it learns (issue 21, item 2): after every epoch the test
images' features land in one stable frame; the job's preview carries the frames, the finished
run keeps them for a replay, and the training itself is not changed by watching it."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from dataclasses import replace

import numpy as np
import pytest
import streamlit as st
from conftest import ROOT, TINY
from streamlit.testing.v1 import AppTest

from core import data as datasets
from core import embed
from core.jobs import Job, JobDB, JobQueue
from core.runs import plan
from core.store import Store
from core.worker import execute

CFG = replace(TINY, train=replace(TINY.train, epochs=3))


def test_a_frame_turned_and_scaled_lands_on_the_previous_one():
    """Procrustes: the same points turned by any angle (and flipped) come back in place, so
    nothing jumps between epochs when the network did not move them."""
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(300, 16)) @ np.diag(np.linspace(3, 0.1, 16))
    first = embed.frame(feats, None)
    spin = np.linalg.qr(rng.normal(size=(16, 16)))[0]  # the same points, turned in 16-D
    unaligned = embed.frame(feats @ spin * 3, None)  # PCA of them picks its own axes
    assert not np.allclose(unaligned, first, atol=0.1)
    again = embed.frame(feats @ spin * 3, first)  # turned onto the previous frame
    assert np.allclose(again, first, atol=1e-3)
    assert np.sqrt((first**2).sum(1).mean()) == pytest.approx(1.0, rel=1e-5)  # unit spread
    collapsed = embed.frame(np.ones((50, 8)), first[:50])  # a diverging network: no crash
    assert collapsed.shape == (50, 2) and not collapsed.any()


def train(root, live: bool) -> list[dict]:
    planned = plan(CFG, Store(root))
    return list(execute(planned, Store(root), threading.Event(), map_after=False,
                        precompute_maps=False, live_map=live))  # fmt: skip


def test_a_job_maps_each_epoch_keeps_the_frames_and_trains_the_same(tmp_path):
    watched = train(tmp_path / "a", live=True)
    plain = train(tmp_path / "b", live=False)
    seen = {u["preview"]["epoch"]: u["preview"]["frame"] for u in watched
            if "frame" in u["preview"]}  # fmt: skip
    assert list(seen) == [1, 2, 3]  # a frame after each epoch, the latest only in each
    frames = [np.stack(list(seen.values()))]
    last = watched[-1]
    assert last["state"] == "done" and last["preview"]["epoch"] == 3
    labels, index = last["preview"]["labels"], last["preview"]["index"]
    store = Store(tmp_path / "a")
    meta = store.meta(last["run_id"])
    kept = embed.kept_frames(store, meta)
    assert kept.shape == (3, len(index), 2) and np.array_equal(kept, frames[-1])
    assert np.array_equal(labels, datasets.load(CFG.data).y_test[index])
    assert all("frame" not in u["preview"] for u in plain)
    # Watching does not change what is learnt: the same weights, bit for bit.
    other = Store(tmp_path / "b").meta(plain[-1]["run_id"])
    assert meta["weights_sha256"] == other["weights_sha256"]
    assert embed.kept_frames(Store(tmp_path / "b"), other) is None


def test_the_queue_keeps_the_opt_in_and_an_older_queue_file_gains_it(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    with sqlite3.connect(old / "queue.sqlite3") as con:  # a queue from before the column
        con.execute("CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE "
                    "NOT NULL, owner TEXT NOT NULL, grp TEXT, cfg TEXT NOT NULL, key TEXT NOT "
                    "NULL, state TEXT NOT NULL, created REAL NOT NULL, started REAL, finished "
                    "REAL, run_id TEXT, cache_hit INTEGER NOT NULL DEFAULT 0, message TEXT NOT "
                    "NULL DEFAULT '', map_after INTEGER NOT NULL DEFAULT 1, stop INTEGER NOT "
                    "NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, version INTEGER NOT "
                    "NULL DEFAULT 0, progress TEXT NOT NULL DEFAULT '{}', history TEXT NOT NULL "
                    "DEFAULT '{}', preview BLOB)")  # fmt: skip
    db = JobDB(old)
    db.insert([Job("j1", "me", CFG, key="k" * 20, live_map=True)], max_live=5)
    assert db.get("j1").live_map is True
    queue = JobQueue(Store(tmp_path / "new"), dispatch=False)
    asked = queue.request([CFG], "me", live_map=True)
    assert queue.get(asked.queued[0].id).live_map is True
    assert asked.run_ids == [asked.queued[0].key]


@pytest.fixture
def watched_run(tmp_path):
    """A store with one run trained with the moving map."""
    root = tmp_path / "store"
    done = train(root, live=True)[-1]
    return root, done["run_id"]


def test_the_train_page_offers_the_map_and_replays_a_finished_run(watched_run, monkeypatch):
    root, run_id = watched_run
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(root))
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["user"], at.query_params["stored"] = "00112233445566aa", run_id
    at.switch_page("views/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.checkbox(key="tr_live_map").label == "Map what it learns, epoch by epoch"
    assert "How the classes pulled apart" in [s.value for s in at.subheader]
    import json

    (replay,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart")
                 if "frames" in json.loads(c.proto.spec)]  # fmt: skip
    assert [f["name"] for f in replay["frames"]] == ["1", "2", "3"]
    assert len(replay["layout"]["sliders"][0]["steps"]) == 3
    st.cache_data.clear()
    st.cache_resource.clear()


def test_a_live_job_shows_its_latest_map_beside_the_curves(watched_run, tmp_path, monkeypatch):
    root, _ = watched_run
    queue_root = tmp_path / "queue-store"
    shutil.copytree(root, queue_root)
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(queue_root))
    st.cache_data.clear()
    st.cache_resource.clear()
    queue = JobQueue(Store(queue_root), dispatch=False)
    other = replace(CFG, train=replace(CFG.train, seed=5))
    (job,) = queue.request([other], "00112233445566aa", live_map=True).queued
    attempt = queue.db.claim(job.id)
    mapper = embed.LiveMap.of(other.data)
    model, _ = Store(root).load_model(Store(root).list()[0]["run_id"])
    queue.db.update(job.id, attempt, {"state": "running", "preview": mapper.add(model, 1),
                                      "progress": {}, "history": {}})  # fmt: skip
    import ui.job_panel
    import ui.state

    for module in (ui.state, ui.job_panel):  # this queue, which does not dispatch: the job
        monkeypatch.setattr(module, "jobs", lambda: queue)  # stays as the test left it
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
    at.session_state["user"], at.query_params["job"] = "00112233445566aa", job.id
    at.switch_page("views/train.py").run(timeout=30)
    captions = [c.value for c in at.caption]
    assert any(c.startswith("After epoch 1:") for c in captions), captions
    st.cache_data.clear()
    st.cache_resource.clear()


def test_a_network_near_divergence_still_gets_a_frame():
    huge = np.random.default_rng(1).normal(size=(200, 8)) * 1e30
    assert embed.frame(huge, None).shape == (200, 2)
    assert not embed.frame(np.full((50, 8), np.inf), None).any()


def test_a_long_replay_shows_at_most_sixty_epochs_the_last_included():
    from ui.charts import REPLAY_FRAMES, moving_map

    frames = np.random.default_rng(2).normal(size=(500, 30, 2)).astype(np.float32)
    fig = moving_map(frames, np.arange(30) % 3, ["a", "b", "c"])
    names = [f.name for f in fig.frames]
    assert len(names) <= REPLAY_FRAMES and names[0] == "1" and names[-1] == "500"
