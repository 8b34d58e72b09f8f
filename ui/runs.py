"""Picking a stored run and what every page needs from it (model, data, predictions)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from core.config import DataConfig
from ui.i18n import t
from ui.state import dataset, store, stored_runs
from ui.text import run_label


def pick_run(label: str, key: str) -> dict | None:
    """A selectbox over the stored runs (the one in ?run= first); None when there are none."""
    runs = stored_runs()
    if not runs:
        st.info(t("ev_no_runs"))
        return None
    ids = [m["run_id"] for m in runs]
    wanted = st.query_params.get("run")
    index = ids.index(wanted) if wanted in ids else 0
    run_id = st.selectbox(label, ids, index=index, key=key,
                          format_func=lambda i: run_label(runs[ids.index(i)]))  # fmt: skip
    st.query_params["run"] = run_id
    return runs[ids.index(run_id)]


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
    from core.embed import write_array
    from core.runs import stored_test_probs, test_probs_path
    from core.train import predict_proba

    meta = store().meta(run_id)
    if meta is None:
        raise KeyError(run_id)
    n, classes = meta["dataset"]["sizes"]["test"], len(meta["classes"])
    if (probs := stored_test_probs(store(), run_id, n, classes)) is not None:
        return probs
    net, meta = model(run_id)
    probs = predict_proba(net, data_of(meta).x_test)
    write_array(test_probs_path(store(), run_id), probs)
    return probs
