"""Compare: two or more runs, curves overlaid and metrics side by side (seed 000's tables)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import presets
from ui.charts import overlay
from ui.i18n import num, paper_source, styled, t
from ui.runs import chosen, label
from ui.state import stored_runs
from ui.text import DASH

METRICS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_f1",
           "top3_accuracy", "roc_auc_macro", "log_loss")  # fmt: skip


def table(runs: list[dict]) -> pd.DataFrame:
    """One column per run (and per paper result it can be compared with), one row per metric."""
    columns = {}
    for meta in runs:
        test = meta["test"]
        column = {t(f"cmp_{m}"): test[m] for m in METRICS}
        column[t("cmp_epochs")] = len(meta["history"]["epoch"])
        column[t("cmp_seconds")] = meta["wall_seconds"]
        columns[label(meta)] = column
        paper = presets.paper_for(meta["model"], meta["config"]["data"]["dataset"])
        if paper:
            columns[paper_source(paper["source"])] = {t(f"cmp_{m}"): paper.get(m)
                                                        for m in METRICS}  # fmt: skip
    return pd.DataFrame(columns)


def table_ui(frame: pd.DataFrame) -> None:
    """The table with the session's separators, a dash where a paper has no figure, scores
    with 4 decimals (also a perfect 1), epochs whole and seconds with one decimal. The
    browser draws a missing value as the placeholder whatever the Styler wrote for it."""
    scores = pd.IndexSlice[[t(f"cmp_{m}") for m in METRICS], :]
    seconds = pd.IndexSlice[[t("cmp_seconds")], :]
    st.dataframe(styled(frame).format(lambda v: num(v, 4), subset=scores)
                 .format(lambda v: num(v, 1), subset=seconds), height="content",
                 placeholder=DASH)  # fmt: skip


def default_runs(ids: list[str]) -> list[str]:
    """The run picked on another page (when there is one) and the newest others: two."""
    picked = [i for i in ids if i == chosen()]
    return picked + [i for i in ids if i not in picked][: 2 - len(picked)]


def main() -> None:
    st.title(t("cmp_title"))
    st.caption(t("cmp_intro"))
    runs = stored_runs()
    if len(runs) < 2:
        st.info(t("cmp_need_two"))
        return
    by_id = {m["run_id"]: m for m in runs}
    labels = {i: label(m) for i, m in by_id.items()}  # looked up now, not in format_func
    ids = st.multiselect(t("cmp_runs"), list(by_id), default=default_runs(list(by_id)),
                         format_func=labels.__getitem__, key="cmp_runs")  # fmt: skip
    if len(ids) < 2:
        st.info(t("cmp_pick_two"))
        return
    picked = [by_id[i] for i in ids]
    st.plotly_chart(overlay([m["history"] for m in picked], [label(m) for m in picked]),
                    key="cmp_curves")  # fmt: skip
    st.caption(t("cmp_legend"))
    table_ui(table(picked))


main()
