"""What pretraining buys (seed 001's question, on one page): the same small labelled sets
trained from scratch, on seed 001's autoencoder pretrained without labels, and on ImageNet
features; one chart of test accuracy against labelled images, one line per start, seed 001's
0.91 beside it. The runs are ordinary jobs of the queue (core.pretraining plans them), so
they are cached, and a refresh or another visitor finds them."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import UserError, pretraining, seed001
from core.config import RunConfig
from ui.charts import pretraining_chart
from ui.i18n import num, pct, styled, t
from ui.state import classroom, dataset, dataset_names, jobs, user
from ui.text import DASH

ASKED = "pt_asked"  # session: (dataset, labels, autoencoder epochs) the visitor asked for


def settings() -> tuple[str, tuple[int, ...], int]:
    """The dataset (a built-in one, one of this visitor's uploaded zips, or a folder the
    teacher offers), the labelled-set sizes and the autoencoder's epochs."""
    c1, c2, c3 = st.columns([1, 2, 1])
    names = dataset_names("pt_dataset")
    name = c1.selectbox(t("tr_dataset"), list(names), format_func=names.get, key="pt_dataset",
                        help=t("pt_dataset_help"))  # fmt: skip
    try:
        available = len(dataset(pretraining.data_of(name)).y_train)
    except UserError as e:
        st.error(str(e))
        return name, (), pretraining.AE_EPOCHS
    offered = list(pretraining.sizes_for(name, available))
    picked = c2.multiselect(t("pt_labels"), offered, default=offered, key=f"pt_labels_{name}",
                            format_func=num, help=t("pt_labels_help"))  # fmt: skip
    epochs = c3.number_input(t("pt_ae_epochs"), 1, 30, pretraining.AE_EPOCHS, key="pt_ae_epochs",
                             help=t("pt_ae_epochs_help"))  # fmt: skip
    return name, tuple(sorted(picked)), int(epochs)


def status(cfg: RunConfig):
    """A run's RunState for this visitor: stored, their job for it, or neither."""
    return jobs().states([cfg], user())[0]


QUEUED = "pt_queued"  # session: the request whose classifiers were queued (once each)


def ask(name: str, labels: tuple[int, ...], ae_epochs: int) -> None:
    """Queue what is missing: the autoencoder first; its classifiers once it is stored.
    Each press of the button asks once: a run that fails is not queued again until the
    visitor presses again."""
    ae = status(pretraining.autoencoder(name, ae_epochs))
    if ae.meta is None:
        if ae.job is None or ae.job.is_final:
            jobs().request([ae.cfg], user(), map_after=False)
        return
    cells = pretraining.cells(ae.run_id, labels, name)
    asked = jobs().request([c.cfg for c in cells], user(), map_after=False)
    st.session_state[QUEUED] = (name, labels, ae_epochs)
    classroom().hand_in(user(), asked.run_ids)


@st.fragment(run_every=3)
def results(name: str, labels: tuple[int, ...], ae_epochs: int) -> None:
    """Where the autoencoder and each run stand, and the chart of what is stored; while the
    visitor's request is open, it queues the classifiers once the autoencoder is in."""
    ae = status(pretraining.autoencoder(name, ae_epochs))
    if ae.meta is None:
        state = ae.job.state if ae.job is not None else "none"
        st.info(t("pt_ae_state", state=t(f"pt_state_{state}"), epochs=ae_epochs))
        if st.session_state.get(ASKED) == (name, labels, ae_epochs) and state in (
            "done", "failed", "stopped", "diverged") and ae.job.message:  # fmt: skip
            st.warning(ae.job.message)
        return
    st.caption(t("pt_ae_ready", run=ae.run_id, mse=num(ae.meta["test"]["mse"], 4)))
    request = (name, labels, ae_epochs)
    if st.session_state.get(ASKED) == request and st.session_state.get(QUEUED) != request:
        try:  # the autoencoder is in since the button was pressed: its classifiers, once
            ask(name, labels, ae_epochs)
        except UserError as e:
            st.error(str(e))
    cells = pretraining.cells(ae.run_id, labels, name)
    states = jobs().states([c.cfg for c in cells], user())
    rows = []
    for c, run in zip(cells, states, strict=True):
        accuracy = run.meta["test"]["accuracy"] if run.meta is not None else None
        state = "done" if run.meta is not None else run.job.state if run.job else "none"
        rows.append({"start": c.start, "labels": c.labels, "accuracy": accuracy,
                     "state": state, "run_id": run.run_id})  # fmt: skip
    done = [r for r in rows if r["accuracy"] is not None]
    st.plotly_chart(pretraining_chart(done, list(pretraining.STARTS),
                                      seed001.CLASSIFIER_ACCURACY if name == "fashion-mnist"
                                      else None), key="pt_chart")  # fmt: skip
    table = pd.DataFrame({
        t("pt_start"): [t(f"pt_start_{r['start']}") for r in rows],
        t("pt_labelled"): [r["labels"] for r in rows],
        t("pt_state"): [t(f"pt_state_{r['state']}") for r in rows],
        t("pt_accuracy"): [r["accuracy"] for r in rows],
    })  # fmt: skip
    shown = styled(table).format(lambda v: pct(v, 1), subset=[t("pt_accuracy")])
    st.dataframe(shown, hide_index=True, width="stretch", placeholder=DASH)
    if name == "fashion-mnist":
        st.caption(t("pt_paper", acc=pct(seed001.CLASSIFIER_ACCURACY, 0)))


def main() -> None:
    st.title(t("pt_title"))
    st.caption(t("pt_intro"))
    name, labels, ae_epochs = settings()
    if st.button(t("pt_go"), type="primary", disabled=not labels):
        st.session_state[ASKED] = (name, labels, ae_epochs)
        st.session_state.pop(QUEUED, None)
        try:
            ask(name, labels, ae_epochs)
        except UserError as e:
            st.error(str(e))
    if labels:
        results(name, labels, ae_epochs)


main()
