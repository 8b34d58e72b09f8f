"""Many students on one server: thirty sessions browse and start runs at once.

AppTest sessions in one process share the server's job queue (a cached resource), as real
browser sessions share one Streamlit server. Runs beyond the worker slots wait in the queue
and each session sees its own place; nobody sees another's run.
"""

from __future__ import annotations

import re

import pytest
import streamlit as st
from conftest import ROOT, widget
from streamlit.testing.v1 import AppTest

SESSIONS = 30
TRAIN = str(ROOT / "views" / "train.py")
HOME = str(ROOT / "app.py")


@pytest.fixture
def fresh_server():
    """Empty caches: a new server process with its own queue and the test's empty store."""
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    from ui.state import jobs

    jobs().shutdown()  # stop what is still queued or running, and wait for the worker
    st.cache_data.clear()
    st.cache_resource.clear()


def start_digits_run(seed: int) -> AppTest:
    """One student: opens Train, picks digits, their own seed, presses Start. 200 epochs of
    cnn_bn keep the one worker busy for the whole test (the fixture stops every run)."""
    at = AppTest.from_file(TRAIN, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="train_dataset").set_value("digits")
    widget(at, "number_input", "Epochs").set_value(200)
    widget(at, "number_input", "Seed").set_value(seed)
    at.run()
    next(b for b in at.button if b.label == "Start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_thirty_sessions_queue_their_runs(fresh_server):
    from ui.state import jobs

    homes = [AppTest.from_file(HOME, default_timeout=120).run() for _ in range(3)]
    assert all(not h.exception for h in homes)
    students = [start_digits_run(seed) for seed in range(SESSIONS)]

    queue = jobs()
    ids = [s.session_state["job"] for s in students]
    users = [s.session_state["user"] for s in students]
    assert len(set(ids)) == SESSIONS and len(set(users)) == SESSIONS
    # One worker slot: at most one runs, the others wait in submission order.
    states = [queue.get(i).state for i in ids]
    assert sum(s == "running" for s in states) <= queue.slots
    places = [queue.position(i) for i in ids if queue.get(i).state == "queued"]
    assert places == sorted(places) and len(places) >= SESSIONS - 1
    # The last student's page tells their place in the queue.
    last = students[-1].run()
    assert not last.exception
    shown = " ".join(i.value for i in last.info)
    match = re.search(r"place (\d+)", shown)
    assert match and int(match.group(1)) == queue.position(ids[-1]) > 1, shown

    # Nobody sees another's run: B's token cannot read or stop A's job.
    assert queue.get(ids[0], users[1]) is None
    assert queue.stop(ids[0], users[1]) is False
    assert {j.id for j in queue.jobs(users[1])} == {ids[1]}
