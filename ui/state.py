"""What the pages share: the dataset, the store, the job queue, the visitor's private token."""

from __future__ import annotations

import os
import secrets
import threading
import time

import streamlit as st

from core import access
from core import data as datasets
from core.config import DataConfig
from core.jobs import FINAL, REQUEUED, JobQueue
from core.serve import ClassifyServer
from core.store import Store
from ui.charts import curves
from ui.i18n import t


def dataset(cfg: DataConfig | None = None):
    """An ImageData, shared read-only by every session (core.data's cache: bounded in
    datasets and bytes, so every dataset anyone opens does not stay decoded here)."""
    return datasets.load(cfg or DataConfig())


@st.cache_resource(show_spinner=False)
def store() -> Store:
    """The store; on this server's first visit, what killed processes left half-written
    (partial uploads and extractions) is removed."""
    from core.data.uploads import clean_stale

    s = Store()
    clean_stale(s.root)
    return s


@st.cache_resource(show_spinner=False)
def jobs() -> JobQueue:
    """The class's queue (on disk beside the store); this server dispatches it, to worker
    processes or a Ray cluster (CNN_CLASSROOM_RAY), and keeps one worker started ahead so
    the first Start shows its curve at once (CNN_CLASSROOM_WARM_WORKER=off: not ahead)."""
    warm = os.environ.get("CNN_CLASSROOM_WARM_WORKER", "on").lower() != "off"
    return JobQueue(store(), warm=warm)


@st.cache_resource(show_spinner=False)
def warm_server() -> threading.Thread:
    """Once per server, in the background: what every first page view would pay (torch and
    the registry's parameter counts, scikit-learn, the map libraries, the default
    dataset decoded, the store's runs verified once: 5-10 s of CPU). A restarted server's
    thirty reconnecting students then do not each wait behind it."""

    def warm() -> None:
        import openTSNE  # noqa: F401

        import core.metrics  # noqa: F401 - scikit-learn and SciPy
        from core import models

        for entry in models.list_models():
            models.parameter_count(entry.name)
        datasets.load(DataConfig()).mean_std()
        store().list()

    thread = threading.Thread(target=warm, daemon=True, name="warm-server")
    thread.start()
    return thread


def class_admitted() -> bool:
    """Whether this visitor may see the pages: no class password is set
    (CNN_CLASSROOM_PASSWORD), or this session gave it, or the URL keeps its token (a
    refresh), which then stays in the URL."""
    if access.password() is None:
        return True
    if st.session_state.get("class_ok") or access.accepts_token(st.query_params.get("class", "")):
        _admit()
        return True
    return False


def _admit() -> None:
    st.session_state.class_ok = True
    st.query_params["class"] = access.token()


def class_password_form() -> None:
    """The password page, in place of the page asked for (which opens once it is given);
    stops the script. A wrong password waits a second: guessing stays slow."""
    st.title(t("pw_title"))
    st.write(t("pw_intro"))
    with st.form("class_password"):
        given = st.text_input(t("pw_label"), type="password")
        entered = st.form_submit_button(t("pw_enter"), type="primary")
    if entered and access.accepts(given):
        _admit()
        st.rerun()
    if entered:
        time.sleep(1.0)
        st.error(t("pw_wrong"))
    st.stop()


USER_COOKIE = "cnn_classroom_user"  # this browser's private token
USER_DAYS = 180  # how long a browser keeps it: a school term and then some


def user() -> str:
    """This visitor's private token: it owns their live jobs and uploads. A cookie keeps it
    (a refresh or a new tab of the same browser is the same visitor), never the URL: a link
    a student shares (a run's Evaluate page, the Train page) hands over nothing of theirs.
    An old link's ``?user=`` is dropped, not adopted."""
    if "user" not in st.session_state:
        token = st.context.cookies.get(USER_COOKIE, "")
        if not _is_token(token):
            token = secrets.token_hex(8)
            _remember(token)
        st.session_state.user = token
    st.query_params.pop("user", None)
    return st.session_state.user


def _is_token(text: str) -> bool:
    return len(text) == 16 and all(c in "0123456789abcdef" for c in text)


def _remember(token: str) -> None:
    """Ask the browser to keep ``token`` (this page's own origin only, sent to it alone).
    Drawn last in the sidebar: an element above the page would shift every element of its
    first run against the next, and Streamlit would show both while the next one runs."""
    cookie = f"{USER_COOKIE}={token}; path=/; max-age={USER_DAYS * 86400}; SameSite=Strict"
    st.sidebar.html(f"<script>document.cookie = {cookie!r};</script>",
                    unsafe_allow_javascript=True)  # fmt: skip


LOAD = "tr_load"  # a config for the Train page's form to show (set by Home's Run)


def start(cfg, key: str = "job") -> None:
    """Show a stored run at once, else queue a job for it; either id is kept in the URL.

    A page reads ``st.session_state[key]`` (a job id) or ``[key + "_stored"]`` (a run id;
    "stored" for the Train page's "job") to know what to show.
    """
    from core.runs import resolve

    stored = "stored" if key == "job" else f"{key}_stored"
    _, run_id = resolve(cfg, store())
    if store().meta(run_id) is not None:
        st.session_state.pop(key, None)
        st.query_params.pop(key, None)
        st.session_state[stored] = st.query_params[stored] = run_id
        return
    job = jobs().submit(cfg, user())
    st.session_state[key] = job.id
    st.session_state.pop(stored, None)
    st.query_params.pop(stored, None)
    st.query_params[key] = job.id


def restart_note(snap: dict) -> None:
    """One line on a live job that a restart of the server interrupted and queued again."""
    if snap["state"] not in FINAL and snap["message"] == REQUEUED:
        st.caption(t("tr_requeued"))


def show_job(job, view) -> None:
    """``view(job_id)`` drawn once for a finished job; for a live one, redrawn until it ends
    (every second while it runs, every 2 s while it waits: thirty waiting students must
    not cost the server what one running curve does), then once more without the timer (an
    open page would otherwise redraw a finished chart forever). The page never trains."""
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
# what a live page costs the browser: in bench/inapp.py --browser (cnn_bn, 2 epochs) the
# browser took 1.6 s of CPU over an 8 s run with a new chart every second, 1.0-1.3 s with one
# every 3 s and 0.6-0.8 s with none, on the two cores the trainer uses when the teacher's
# browser runs beside the server. The same figure sent again costs it next to nothing.
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


@st.cache_data(show_spinner=False, ttl=2)
def stored_runs(task: str = "classify") -> list[dict]:
    """Verified metadata of the stored runs of one task ("classify", or "reconstruct" for
    autoencoders), newest first (re-read at most every 2 s)."""
    return [m for m in store().list() if m.get("task", "classify") == task]


@st.cache_resource(show_spinner=False)
def classify_server() -> ClassifyServer | None:
    """The Gradio classify tab, started once per Streamlit server on the same interface
    (None when CNN_CLASSROOM_GRADIO=off, as in the page tests)."""
    if os.environ.get("CNN_CLASSROOM_GRADIO", "").lower() == "off":
        return None
    return ClassifyServer(st.get_option("server.address") or "")
