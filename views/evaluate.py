"""Evaluate: report, confusion matrix you can click into, top losses, curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core import calibration, metrics, presets
from core import report as html_report
from ui import runs
from ui.charts import confusion, curves, per_class, reliability
from ui.exports import onnx_ui
from ui.gallery import gallery, page
from ui.i18n import class_name, decimal_slider, lang, num, paper_source, pct, styled, t
from ui.runs import data_of, pick_run, test_probs
from ui.state import store
from ui.text import DASH, plain

GALLERY_LIMIT = 48  # images of a clicked cell per page
PICKER = "ev_run"  # the run picker's key
CELL = "cm_cell"  # session: (run id, cell number) of the last clicked cell
BIN = "cal_bin"  # session: (run id, bin number) of the last clicked reliability bar
SCORES = ("precision", "recall", "f1")


def summary_ui(meta: dict) -> None:
    test = meta["test"]
    cols = st.columns(5)
    cols[0].metric(t("ev_accuracy"), num(test["accuracy"], 4))
    cols[1].metric(t("ev_macro_f1"), num(test["macro_f1"], 4))
    cols[2].metric(t("ev_top3"), num(test["top3_accuracy"], 4))
    cols[3].metric(t("ev_auc"), num(test["roc_auc_macro"], 4), help=t("ev_help_auc"))
    cols[4].metric(t("ev_logloss"), num(test["log_loss"], 4))
    paper = presets.paper_for(meta["model"], meta["config"]["data"]["dataset"])
    if paper:
        st.caption(t("ev_paper", source=paper_source(paper["source"]),
                     acc=num(paper["accuracy"], 4), ours=num(test["accuracy"], 4)))  # fmt: skip


def report_table(meta: dict) -> pd.DataFrame:
    test = meta["test"]
    heads = {s: t(f"ev_{s}") for s in SCORES}
    rows = [
        {t("ev_class"): class_name(name), **{heads[s]: r[s] for s in SCORES},
         t("ev_support"): r["support"]}
        for name, r in test["per_class"].items()
    ]  # fmt: skip
    for avg in ("macro", "weighted"):
        rows.append({t("ev_class"): t(f"ev_{avg}_avg"),
                     **{heads[s]: test[f"{avg}_{s}"] for s in SCORES},
                     t("ev_support"): test["support"]})  # fmt: skip
    return pd.DataFrame(rows)


def report_ui(meta: dict) -> None:
    frame = report_table(meta)
    scores = [t(f"ev_{s}") for s in SCORES]
    # Scores keep their 4 decimals even when one is exactly 1 (styled() writes "1"); the
    # table is as tall as its rows (up to a few dozen), so the averages stay in sight.
    height = "content" if len(frame) <= 25 else "auto"
    shown = styled(frame).format(lambda v: num(v, 4), subset=scores)
    wide = {t("ev_class"): st.column_config.TextColumn(width=145)}  # "promedio ponderado"
    st.dataframe(shown, hide_index=True, height=height, column_config=wide, placeholder=DASH)


def per_class_ui(meta: dict) -> None:
    st.subheader(t("ev_per_class"))
    st.caption(t("ev_per_class_order"))
    names = [class_name(c) for c in meta["classes"]]
    accuracy = [r["accuracy"] for r in meta["test"]["per_class"].values()]
    st.plotly_chart(per_class(names, accuracy, t("ev_accuracy")), key="ev_per_class")


def confusion_ui(meta: dict) -> None:
    """The matrix; a click on a cell opens its images below. The clicked cell is kept in
    the session, so it stays open when the matrix switches to shares (another chart)."""
    st.subheader(t("ev_confusion"))
    normalized = st.toggle(t("ev_normalized"), value=False, help=t("ev_help_normalized"))
    key = "confusion_matrix_normalized" if normalized else "confusion_matrix"
    names = [class_name(c) for c in meta["classes"]]
    figure = confusion(meta["test"][key], names, normalized)
    run_id = meta["run_id"]
    chart_key = f"cm_{run_id}_{normalized}"

    def clicked() -> None:  # only when the selection changes: a click or a deselection
        points = st.session_state[chart_key]["selection"]["points"]
        cells = [p["point_index"] for p in points if p.get("curve_number") == 1]  # not the heatmap
        st.session_state[CELL] = (run_id, int(cells[0])) if cells else None

    st.plotly_chart(figure, on_select=clicked, selection_mode="points", key=chart_key)
    if clicked_cell(meta) is None:
        st.caption(t("ev_click_cell"))


def clicked_cell(meta: dict) -> int | None:
    """The cell last clicked in this run's matrix, if any."""
    picked = st.session_state.get(CELL)
    n = len(meta["classes"])
    if not picked or picked[0] != meta["run_id"] or not 0 <= picked[1] < n * n:
        return None
    return picked[1]


def cell_gallery_ui(meta: dict, probs: np.ndarray, data) -> None:
    """The test images of the clicked confusion-matrix cell, with their probabilities, a
    page at a time."""
    cell = clicked_cell(meta)
    if cell is None:
        return
    names = [class_name(c) for c in meta["classes"]]
    true, pred = divmod(cell, len(names))
    idx = metrics.pair_indices(data.y_test, probs.argmax(1), true, pred)
    st.markdown(t("ev_cell", n=num(len(idx)), true=plain(names[true]), pred=plain(names[pred])))
    shown = idx[page(len(idx), GALLERY_LIMIT, key=f"ev_cell_page_{cell}")]
    guess = [f"{names[pred]} {pct(probs[i, pred], 0)}" for i in shown]
    if true != pred:  # and how sure it was of the right class
        guess = [
            f"{g} ({names[true]} {pct(probs[i, true], 0)})"
            for g, i in zip(guess, shown, strict=True)
        ]
    gallery(data.x_test[shown], guess, [true == pred] * len(shown), columns=10, name="cell")


def top_losses_ui(meta: dict, probs: np.ndarray, data) -> None:
    st.subheader(t("ev_gallery"))
    st.caption(t("ev_gallery_help"))
    names = [class_name(c) for c in meta["classes"]]
    labels = {m: t(f"ev_mode_{m}") for m in ("losses", "sample")}
    mode = st.radio(t("ev_gallery_mode"), list(labels), horizontal=True, format_func=labels.get)
    if mode == "losses":
        idx = np.array([m["index"] for m in metrics.misclassified(data.y_test, probs, 24)],
                       dtype=int)  # fmt: skip
    else:
        idx = np.random.default_rng(0).choice(len(data.y_test), 24, replace=False)
    pred = probs.argmax(1)
    gallery(data.x_test[idx],
            [f"{names[pred[i]]} {pct(probs[i, pred[i]], 0)} ({names[data.y_test[i]]})"
             for i in idx],
            [bool(pred[i] == data.y_test[i]) for i in idx], columns=12, name=mode)  # fmt: skip


@st.cache_data(show_spinner=False, max_entries=32)
def fitted_temperature(run_id: str) -> float:
    """The temperature fitted on the run's validation split (its logits are kept beside the
    run once computed: a run trained before them loads its model and computes them, once)."""
    data = data_of(store().meta(run_id))
    return calibration.fit_temperature(calibration.val_logits(store(), run_id, data=data),
                                       data.y_val)  # fmt: skip


def calibration_ui(meta: dict, probs: np.ndarray, data) -> None:
    """The reliability diagram at a temperature the reader picks (the fitted one first), the
    calibration error before and at it, and the clicked bin's test images."""
    st.subheader(t("ev_calibration"))
    st.caption(t("ev_calibration_help"))
    run_id = meta["run_id"]
    with st.spinner(t("ev_calibrating")):
        fitted = round(fitted_temperature(run_id), 2)
    logits = calibration.as_logits(probs)
    left, right = st.columns([2, 3])
    with left:
        temperature = decimal_slider(st, t("ev_temperature"), 0.25, 4.0, fitted, step=0.05,
                                     key=f"ev_t_{run_id}",
                                     help=t("ev_temperature_help"))  # fmt: skip
        now = calibration.scaled(logits, temperature)
        found = calibration.reliability(now, data.y_test)
        before = calibration.ece(probs, data.y_test)
        a, b = st.columns(2)
        a.metric(t("ev_ece_before"), num(before, 4), help=t("ev_help_ece"))
        b.metric(t("ev_ece_now"), num(found["ece"], 4), help=t("ev_help_ece"),
                 delta=num(found["ece"] - before, 4), delta_color="inverse")  # fmt: skip
        a.metric(t("ev_fitted_t"), num(fitted, 2))
        b.metric(t("ev_nll_now", before=num(calibration.nll(probs, data.y_test), 4)),
                 num(calibration.nll(now, data.y_test), 4))  # fmt: skip
    key = f"ev_rel_{run_id}"

    def clicked() -> None:
        points = st.session_state[key]["selection"]["points"]
        bins = [p["point_index"] for p in points if p.get("curve_number") == 0]
        st.session_state[BIN] = (run_id, int(bins[0])) if bins else None

    with right:
        st.plotly_chart(reliability(found, temperature), key=key, on_select=clicked,
                        selection_mode="points")  # fmt: skip
    picked = st.session_state.get(BIN)
    if not picked or picked[0] != run_id:
        st.caption(t("ev_click_bin"))
        return
    number = picked[1]
    idx = np.flatnonzero(found["bin"] == number)
    lo, hi = found["edges"][number], found["edges"][number + 1]
    if not len(idx):
        st.info(t("ev_bin_empty"))
        return
    st.markdown(t("ev_bin", n=num(len(idx)), lo=pct(lo, 0), hi=pct(hi, 0),
                  acc=pct(found["accuracy"][number])))  # fmt: skip
    names = [class_name(c) for c in meta["classes"]]
    shown = idx[page(len(idx), GALLERY_LIMIT, key=f"ev_bin_page_{number}")]
    pred = now.argmax(1)
    gallery(data.x_test[shown],
            [f"{names[pred[i]]} {pct(now[i, pred[i]], 0)} ({names[data.y_test[i]]})"
             for i in shown],
            [bool(pred[i] == data.y_test[i]) for i in shown], columns=12, name="bin")  # fmt: skip


def download_ui(meta: dict, probs: np.ndarray, data) -> None:
    """The run's report as one HTML file (core.report), made only when clicked: Streamlit
    calls ``make`` on another thread, outside this run, so it holds all it needs."""
    run_id, language, link, where = meta["run_id"], lang(), runs.share_link(meta["run_id"]), store()

    def make() -> str:
        return html_report.build(where, run_id, language, link, data=data, probs=probs)

    st.download_button(t("ev_download_report"), make, file_name=f"report-{run_id}.html",
                       mime="text/html", on_click="ignore", icon=":material/download:",
                       help=t("ev_download_report_help"),
                       key=f"ev_report_{run_id}_{language}")  # fmt: skip


def main() -> None:
    st.title(t("ev_title"))
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    with left:
        meta = pick_run(t("ev_run"), PICKER)
    if meta is None:
        return
    with right:
        runs.name_ui(
            meta["run_id"],
            "ev_name",
            t("ev_name"),
            t("ev_name_help"),
            t("ev_name_placeholder"),
            PICKER,
        )
    data = data_of(meta)
    probs = test_probs(meta["run_id"])
    summary_ui(meta)
    share, model_file, download = st.columns([4, 4, 3], vertical_alignment="top")
    with share:
        runs.share_ui(meta["run_id"])
    with model_file, st.expander(t("dl_title")):
        onnx_ui(meta)
    with download:
        download_ui(meta, probs, data)
    st.plotly_chart(curves(meta["history"], overfit=meta.get("overfitting_epoch")),
                    key="ev_curves")  # fmt: skip
    if meta.get("overfitting_epoch"):
        st.caption(t("ev_overfit", epoch=meta["overfitting_epoch"]))
    left, right = st.columns([1, 1])
    with left:
        confusion_ui(meta)
    with right:
        st.subheader(t("ev_report"))
        report_ui(meta)
        per_class_ui(meta)
    cell_gallery_ui(meta, probs, data)
    top_losses_ui(meta, probs, data)
    calibration_ui(meta, probs, data)


main()
