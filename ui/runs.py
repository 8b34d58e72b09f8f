"""Picking a stored run and what every page needs from it (model, data, predictions).

The run a visitor picks on one page stays picked on the others: it is kept in the session
and in the URL (``?run=``), so a refresh or a shared link opens it again. With nothing
picked a page opens the visitor's own latest run, else the best Fashion-MNIST run.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from core import tasks
from core.config import DataConfig
from core.store import MAX_NAME
from ui import text
from ui.i18n import lang, t
from ui.state import dataset, jobs, store, stored_runs, user

CHOSEN = "run"  # the session's and the URL's key for the picked run
DEFAULT_DATASET = "Fashion-MNIST"


@st.cache_data(show_spinner=False, ttl=2)
def names() -> dict[str, str]:
    """The names people gave runs (re-read at most every 2 s)."""
    return store().names()


def label(meta: dict, language: str | None = None) -> str:
    """A run's one-line label in the session's language (or ``language``: a selectbox may
    format its options outside the session's run), with its name when it has one."""
    return text.run_label(meta, language or lang(), names().get(meta["run_id"]))


def name_ui(run_id: str, prefix: str, label_text: str, help: str,
            placeholder: str | None = None, picker: str | None = None) -> None:  # fmt: skip
    """A text box (key ``prefix_<run id>``) naming the run; the name, as the store keeps it,
    then shows in every run label on every page. ``picker``: the key of the page's run
    picker, if it has one."""
    key = f"{prefix}_{run_id}"
    if key not in st.session_state:  # opened on the run's current name
        st.session_state[key] = names().get(run_id, "")

    def rename() -> None:
        st.session_state[key] = store().set_name(run_id, st.session_state[key])  # as kept
        names.clear()  # every label shows it from this rerun on
        if picker is not None:
            # The browser keeps showing a picked option's old label while the pick is
            # unchanged; setting the pick again makes it redraw with the new label.
            st.session_state[picker] = run_id

    st.text_input(label_text, key=key, max_chars=MAX_NAME, on_change=rename,
                  placeholder=placeholder, help=help)  # fmt: skip


def choose(run_id: str) -> None:
    """Make ``run_id`` the picked run on every page (and in the URL)."""
    st.session_state[CHOSEN] = run_id
    st.query_params[CHOSEN] = run_id


def chosen() -> str | None:
    """The run picked on any page (this session's choice, else the URL's)."""
    return st.session_state.get(CHOSEN) or st.query_params.get(CHOSEN)


def own_latest(ids: list[str]) -> str | None:
    """The newest of ``ids`` that one of this visitor's jobs produced."""
    mine = {job.run_id for job in jobs().jobs(user()) if job.run_id}
    return next((i for i in ids if i in mine), None)  # ids: newest first


def best_of(runs: list[dict], dataset_name: str = DEFAULT_DATASET) -> str | None:
    """The run of ``dataset_name`` with the best test accuracy."""
    scored = [m for m in runs if m["dataset"]["name"] == dataset_name and "accuracy" in m["test"]]
    return max(scored, key=lambda m: m["test"]["accuracy"])["run_id"] if scored else None


def default_run(runs: list[dict]) -> str:
    """What a page opens on: the picked run, the visitor's own latest, the best
    Fashion-MNIST run, else the newest (``runs`` newest first, not empty)."""
    ids = [m["run_id"] for m in runs]
    if (picked := chosen()) in ids:
        return picked
    return own_latest(ids) or best_of(runs) or ids[0]


def _follow(key: str, wanted: str) -> None:
    """Open the selectbox ``key`` on ``wanted`` when it was picked elsewhere (a widget's
    own state would otherwise keep an older pick)."""
    if st.session_state.get(key) != wanted:
        st.session_state[key] = wanted


def pick_run(label_text: str, key: str, task: str = "classify", help: str | None = None,
             empty: str = "ev_no_runs") -> dict | None:  # fmt: skip
    """A selectbox over the stored runs of ``task``, opened on ``default_run``. A classifier
    picked here becomes every page's pick; an autoencoder stays this page's. None (with the
    ``empty`` message) when there are none."""
    runs = stored_runs(task)
    if not runs:
        st.info(t(empty))
        return None
    by_id = {m["run_id"]: m for m in runs}
    shared = isinstance(tasks.named(task), tasks.Classify)
    if shared:
        _follow(key, default_run(runs))
    elif st.session_state.get(key) not in by_id:
        st.session_state[key] = own_latest(list(by_id)) or runs[0]["run_id"]
    picked = (lambda: choose(st.session_state[key])) if shared else None
    language = lang()  # read now: Streamlit may call format_func outside this run
    run_id = st.selectbox(label_text, list(by_id), key=key, help=help, on_change=picked,
                          format_func=lambda i: label(by_id[i], language))  # fmt: skip
    if shared:
        choose(run_id)  # the first view's default is kept too: the URL names what is shown
    return by_id[run_id]


def share_link(run_id: str, page: str = "evaluate") -> str:
    """A read-only link to a run's page: this app's address as the browser sees it, the
    page, the run and the language; nothing of the visitor's (their token is a cookie)."""
    here = (st.context.url or "").split("?", 1)[0].rstrip("/")
    root = here.rsplit("/", 1)[0] if here.count("/") > 2 else here  # drop this page's path
    return f"{root}/{page}?run={run_id}&lang={lang()}"


def share_ui(run_id: str) -> None:
    with st.expander(t("ev_share")):
        st.caption(t("ev_share_help"))
        st.code(share_link(run_id), language=None)


@st.cache_resource(show_spinner=False, max_entries=8)
def model(run_id: str):
    """(model, meta) loaded once per server and kept (read-only: inference only)."""
    return store().load_model(run_id)


def data_of(meta: dict):
    return dataset(DataConfig(**meta["config"]["data"]))


@st.cache_data(show_spinner=False, max_entries=16)
def test_probs(run_id: str) -> np.ndarray:
    """Class probabilities (N, C) of the run's model on its test set: as saved when it was
    trained, or computed now (and saved) for a run from before."""
    from core import runs

    if (probs := store().test_probs(run_id)) is not None:
        return probs
    net, meta = model(run_id)
    return runs.test_probs(store(), run_id, net, data_of(meta))
