"""A job on a page: start it (or show the stored run), and the one panel every page shows a
job in (its state, progress and live curves, redrawn until it ends)."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

import streamlit as st

from core.jobs import FINAL, REQUEUED
from ui.charts import curves
from ui.i18n import num, t
from ui.state import classroom, jobs, user


def start(cfg, key: str = "job", assignment: str = "", live_map: bool = False) -> None:
    """Queue a job for ``cfg`` unless it is stored (then it shows at once) or this visitor
    already has one waiting or running for it (then that one shows); either id is kept in
    the URL.

    A page reads ``st.session_state[key]`` (a job id) or ``[key + "_stored"]`` (a run id;
    "stored" for the Train page's "job") to know what to show. The run counts as this
    visitor's hand-in (under ``assignment``) on the teacher's class board; ``live_map``: the
    job maps the test images' features after every epoch (core.embed.LiveMap).
    """
    stored = "stored" if key == "job" else f"{key}_stored"
    asked = jobs().request([cfg], user(), live_map=live_map)
    classroom().hand_in(user(), asked.run_ids, assignment)
    run = None if asked.queued else jobs().states([cfg], user())[0]
    if run is not None and run.meta is not None:
        st.session_state.pop(key, None)
        st.query_params.pop(key, None)
        st.session_state[stored] = st.query_params[stored] = run.run_id
        return
    job = asked.queued[0] if asked.queued else run.job
    st.session_state[key] = st.query_params[key] = job.id
    st.session_state.pop(stored, None)
    st.query_params.pop(stored, None)


def restart_note(snap: dict) -> None:
    """One line on a live job that a restart of the server interrupted and queued again."""
    if snap["state"] not in FINAL and snap["message"] == REQUEUED:
        st.caption(t("tr_requeued"))


def show_job(job, key: str, done: Callable[[dict], None],
             aside: Callable[[object, dict], None] | None = None,
             loss_digits: int = 3) -> None:  # fmt: skip
    """``job_panel`` (same arguments) drawn once for a finished job; for a live one, redrawn
    until it ends (every second while it runs, every 2 s while it waits: thirty waiting
    students must not cost the server what one running curve does), then once more without
    the timer (an open page would otherwise redraw a finished chart forever). The page
    never trains."""
    view = functools.partial(job_panel, key=key, done=done, aside=aside,
                             loss_digits=loss_digits)  # fmt: skip
    if job.is_final:
        view(job.id)
    elif job.state == "queued":
        _waiting_job(job.id, view)
    else:
        _live_job(job.id, view)


def _redraw(job_id: str, view, keep) -> None:
    """One timed redraw; a whole rerun (a new timer, or none) once ``keep(job)`` is false."""
    view(job_id)
    job = jobs().get(job_id, user())
    if job is None or not keep(job):
        st.rerun()


LIVE_ENV, LIVE_EVERY = "CNN_CLASSROOM_LIVE_EVERY", 1.0


def _live_every() -> float:
    """Seconds between redraws of a running job's page (CNN_CLASSROOM_LIVE_EVERY, 0.25-10).
    Each redraw costs the server a script run and the browser a new chart: at 1 s the curve
    still moves with every report that matters, at half the cost of 0.5 s (bench/inapp.py)."""
    try:
        return min(10.0, max(0.25, float(os.environ.get(LIVE_ENV, LIVE_EVERY))))
    except ValueError:
        return LIVE_EVERY


# Seconds between new drawings of a running job's curves. A new Plotly figure is most of
# what a live page costs the browser, on the two cores the trainer uses when the teacher's
# browser runs beside the server; the same figure sent again costs it next to nothing
# (bench/inapp.py --browser; figures: README, Benchmarks).
CHART_EVERY = 3.0


def live_curves(where, job_id: str, history: dict, batches: int | None, running: bool,
                key: str) -> None:  # fmt: skip
    """A job's curves in ``where``. While it runs, the figure is made anew when an epoch
    ends or CHART_EVERY seconds have passed, and the last one is sent again in between
    (the progress line above it still moves every second); once it ends, at once."""
    slot, epochs = f"live_chart_{key}", len(history.get("epoch") or ())
    last = st.session_state.get(slot)  # (job id, epochs drawn, when, figure): one per page
    stale = last is None or last[:2] != (job_id, epochs)
    if not running or stale or time.monotonic() - last[2] >= CHART_EVERY:
        last = (job_id, epochs, time.monotonic(), curves(history, batches))
        st.session_state[slot] = last
    where.plotly_chart(last[3], key=f"{key}_{job_id}")


@st.fragment(run_every=_live_every())
def _live_job(job_id: str, view) -> None:
    _redraw(job_id, view, lambda job: not job.is_final)


@st.fragment(run_every=2.0)
def _waiting_job(job_id: str, view) -> None:
    _redraw(job_id, view, lambda job: job.state == "queued")  # started or ended: rerun


def partial_epoch(history: dict, progress: dict) -> dict:
    """A run stopped part-way into an epoch: its last point sits where it stopped (2.14,
    not 3), since that epoch's training saw only part of the images."""
    epochs = history.get("epoch") or []
    batch, batches = progress.get("batch", 0), progress.get("batches", 0)
    if not epochs or not batches or batch >= batches or progress.get("epoch") != epochs[-1]:
        return history
    return {**history, "epoch": [*epochs[:-1], epochs[-1] - 1 + batch / batches]}


def job_panel(job_id: str, key: str, done: Callable[[dict], None],
              aside: Callable[[object, dict], None] | None = None,
              loss_digits: int = 3) -> None:  # fmt: skip
    """A job's state, progress and curves, from its snapshot: what ``show_job`` redraws.

    ``done(snapshot)`` draws a finished run's line; ``aside(column, snapshot)``, when given,
    fills a column beside the curves (the autoencoder's reconstructions). ``key`` names the
    live chart (one per page)."""
    job = jobs().get(job_id, user())
    if job is None:
        st.warning(t("tr_job_gone"))
        return
    snap = job.snapshot()
    state, progress, history = snap["state"], snap["progress"], snap["history"]
    if state == "queued":
        st.info(t("tr_queued", place=jobs().position(job_id)))
    elif state == "waiting":
        st.info(t("tr_waiting"))
    elif state == "running" and not progress:
        st.info(t("tr_starting"))
    elif state == "running":
        done_share = ((progress["epoch"] - 1) * progress["batches"] + progress["batch"]) / (
            progress["epochs"] * progress["batches"])  # fmt: skip
        st.progress(min(done_share, 1.0), text=t(
            "tr_progress", epoch=progress["epoch"], epochs=progress["epochs"],
            speed=num(progress["images_per_second"]), eta=num(progress["eta"]),
            loss=num(progress["loss"], loss_digits)))  # fmt: skip
    elif state == "done":
        done(snap)
    elif state == "diverged":
        st.error(t("tr_diverged", why=snap["message"]))
    elif state in ("stopped", "failed"):
        st.warning(t(f"tr_{state}", why=snap["message"]))
        history = partial_epoch(history, progress)
    restart_note(snap)
    if state in ("diverged", "failed") and not history:
        return
    # Drawn from the start (empty axes while queued): the chart is in place, and its first
    # points appear in the same spot as soon as the run reports them.
    where, beside = st.columns(2) if aside is not None else (st, None)
    live_curves(where, job_id, history, progress.get("batches"), state == "running", key)
    if aside is not None:
        aside(beside, snap)
