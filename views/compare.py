"""Compare: two or more runs, curves overlaid and metrics side by side (seed 000's tables)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from core import presets
from ui.i18n import t
from ui.state import stored_runs
from ui.text import run_label

METRICS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_f1",
           "top3_accuracy", "roc_auc_macro", "log_loss")  # fmt: skip


def overlay(runs: list[dict]):
    """Validation (solid) and training (dotted) loss and accuracy of every run, per epoch."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(t("ch_loss"), t("ch_accuracy")))
    for k, meta in enumerate(runs):
        color = qualitative.Plotly[k % len(qualitative.Plotly)]
        h, name = meta["history"], f"{meta['model']} · {meta['run_id'][:6]}"
        for col, metric in ((1, "loss"), (2, "accuracy")):
            fig.add_trace(go.Scatter(x=h["epoch"], y=h[f"val_{metric}"], name=name,
                                     legendgroup=name, showlegend=col == 1,
                                     line={"color": color}), 1, col)  # fmt: skip
            fig.add_trace(go.Scatter(x=h["epoch"], y=h[f"train_{metric}"], name=name,
                                     legendgroup=name, showlegend=False,
                                     line={"color": color, "dash": "dot"}), 1, col)  # fmt: skip
    fig.update_xaxes(title_text=t("ch_epoch"))
    fig.update_layout(height=380, margin={"t": 40, "b": 10, "l": 10, "r": 10},
                      legend={"orientation": "h", "y": -0.2})  # fmt: skip
    return fig


def table(runs: list[dict]) -> pd.DataFrame:
    """One column per run (and per paper result it can be compared with), one row per metric."""
    columns = {}
    for meta in runs:
        test = meta["test"]
        column = {t(f"cmp_{m}"): test[m] for m in METRICS}
        column[t("cmp_epochs")] = len(meta["history"]["epoch"])
        column[t("cmp_seconds")] = round(meta["wall_seconds"], 1)
        columns[f"{meta['model']} · {meta['run_id'][:6]}"] = column
        paper = presets.paper_for(meta["model"], meta["config"]["data"]["dataset"])
        if paper:
            columns[paper["source"]] = {t(f"cmp_{m}"): paper.get(m) for m in METRICS}
    return pd.DataFrame(columns)


def main() -> None:
    st.title(t("cmp_title"))
    st.caption(t("cmp_intro"))
    runs = stored_runs()
    if len(runs) < 2:
        st.info(t("cmp_need_two"))
        return
    by_id = {m["run_id"]: m for m in runs}
    chosen = st.multiselect(t("cmp_runs"), list(by_id), default=list(by_id)[:2],
                            format_func=lambda i: run_label(by_id[i]))  # fmt: skip
    if len(chosen) < 2:
        st.info(t("cmp_pick_two"))
        return
    picked = [by_id[i] for i in chosen]
    st.plotly_chart(overlay(picked), key="cmp_curves")
    st.caption(t("cmp_legend"))
    st.dataframe(table(picked).style.format(precision=4, na_rep="—"))


main()
