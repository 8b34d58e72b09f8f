"""Evaluate: report, confusion matrix you can click into, top losses, curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core import metrics, presets
from ui.charts import confusion, curves
from ui.gallery import gallery
from ui.i18n import class_name, t
from ui.runs import data_of, pick_run, test_probs

GALLERY_LIMIT = 48


def summary_ui(meta: dict) -> None:
    test = meta["test"]
    cols = st.columns(5)
    cols[0].metric(t("ev_accuracy"), f"{test['accuracy']:.4f}")
    cols[1].metric(t("ev_macro_f1"), f"{test['macro_f1']:.4f}")
    cols[2].metric(t("ev_top3"), f"{test['top3_accuracy']:.4f}")
    auc = test["roc_auc_macro"]
    cols[3].metric(t("ev_auc"), f"{auc:.4f}" if auc is not None else "—", help=t("ev_help_auc"))
    cols[4].metric(t("ev_logloss"), f"{test['log_loss']:.4f}")
    paper = presets.paper_for(meta["model"], meta["config"]["data"]["dataset"])
    if paper:
        st.caption(t("ev_paper", source=paper["source"], acc=f"{paper['accuracy']:.4f}",
                     ours=f"{test['accuracy']:.4f}"))  # fmt: skip


def report_table(meta: dict) -> pd.DataFrame:
    test = meta["test"]
    rows = [
        {t("ev_class"): class_name(name), "precision": r["precision"], "recall": r["recall"],
         "F1": r["f1"], t("ev_support"): r["support"]}
        for name, r in test["per_class"].items()
    ]  # fmt: skip
    for avg in ("macro", "weighted"):
        rows.append({t("ev_class"): t(f"ev_{avg}_avg"), "precision": test[f"{avg}_precision"],
                     "recall": test[f"{avg}_recall"], "F1": test[f"{avg}_f1"],
                     t("ev_support"): test["support"]})  # fmt: skip
    return pd.DataFrame(rows)


def confusion_ui(meta: dict, probs: np.ndarray, data) -> None:
    st.subheader(t("ev_confusion"))
    normalized = st.toggle(t("ev_normalized"), value=False, help=t("ev_help_normalized"))
    key = "confusion_matrix_normalized" if normalized else "confusion_matrix"
    names = [class_name(c) for c in meta["classes"]]
    figure = confusion(meta["test"][key], names, normalized)
    chart_key = f"cm_{meta['run_id']}_{normalized}"
    event = st.plotly_chart(figure, on_select="rerun", selection_mode="points", key=chart_key)
    points = [
        p
        for p in (event.selection.get("points", []) if event else [])
        if p.get("curve_number") == 1
    ]  # the clickable layer, not the heatmap
    st.session_state.cm_cell = int(points[0]["point_index"]) if points else None
    if not points:
        st.caption(t("ev_click_cell"))


def cell_gallery_ui(meta: dict, probs: np.ndarray, data) -> None:
    """The test images of the clicked confusion-matrix cell, with their probabilities."""
    cell = st.session_state.get("cm_cell")
    if cell is None:
        return
    names = [class_name(c) for c in meta["classes"]]
    true, pred = divmod(cell, len(names))
    y_pred = probs.argmax(1)
    idx = metrics.pair_indices(data.y_test, y_pred, true, pred)
    st.markdown(t("ev_cell", n=len(idx), true=names[true], pred=names[pred]))
    shown = idx[:GALLERY_LIMIT]
    gallery(data.x_test[shown],
            [f"{names[pred]} {probs[i, pred]:.0%} ({names[true]} {probs[i, true]:.0%})"
             for i in shown], [true == pred] * len(shown), columns=10, name="cell")  # fmt: skip


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
            [f"{names[pred[i]]} {probs[i, pred[i]]:.0%} ({names[data.y_test[i]]})" for i in idx],
            [bool(pred[i] == data.y_test[i]) for i in idx], columns=12, name=mode)  # fmt: skip


def main() -> None:
    st.title(t("ev_title"))
    meta = pick_run(t("ev_run"), "ev_run")
    if meta is None:
        return
    data = data_of(meta)
    probs = test_probs(meta["run_id"])
    summary_ui(meta)
    st.plotly_chart(curves(meta["history"], overfit=meta.get("overfitting_epoch")),
                    key="ev_curves")  # fmt: skip
    if meta.get("overfitting_epoch"):
        st.caption(t("ev_overfit", epoch=meta["overfitting_epoch"]))
    left, right = st.columns([1, 1])
    with left:
        confusion_ui(meta, probs, data)
    with right:
        st.subheader(t("ev_report"))
        st.dataframe(report_table(meta).style.format(precision=4), hide_index=True)
        st.subheader(t("ev_per_class"))
        acc = pd.DataFrame({t("ev_class"): [class_name(c) for c in meta["classes"]],
                            t("ev_accuracy"): [r["accuracy"] for r in
                                               meta["test"]["per_class"].values()]})  # fmt: skip
        st.bar_chart(acc, x=t("ev_class"), y=t("ev_accuracy"), horizontal=True)
    cell_gallery_ui(meta, probs, data)
    top_losses_ui(meta, probs, data)


main()
