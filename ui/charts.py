"""Plotly figures shared by the pages (curves, confusion matrix, bars)."""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ui.i18n import lang, num, pct, t
from ui.text import SEPARATORS

TRAIN_COLOR, VAL_COLOR, BATCH_COLOR = "#1f77b4", "#ff7f0e", "rgba(31,119,180,0.35)"


def curves(history: dict, batches_per_epoch: int | None = None, overfit: int | None = None):
    """Loss and accuracy, train against validation, per epoch; the per-batch loss trace
    underneath (x in epochs); a dashed line where validation loss starts to rise. A history
    without accuracy (an autoencoder's) gets the loss panel alone."""
    accuracy = "train_accuracy" in history or not history
    titles = (t("ch_loss"), t("ch_accuracy")) if accuracy else (t("ch_loss"),)
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles)
    epochs = history.get("epoch", [])
    if batches_per_epoch is None and history.get("batch_step") and epochs:
        batches_per_epoch = history["batch_step"][-1] // epochs[-1]  # a finished run's own
    if history.get("batch_step") and batches_per_epoch:
        x = [s / batches_per_epoch for s in history["batch_step"]]
        fig.add_trace(go.Scatter(x=x, y=history["batch_loss"], name=t("ch_batch_loss"),
                                 line={"color": BATCH_COLOR, "width": 1}), 1, 1)  # fmt: skip
    for key, col, name, color in (
        ("train_loss", 1, t("ch_train"), TRAIN_COLOR),
        ("val_loss", 1, t("ch_val"), VAL_COLOR),
        ("train_accuracy", 2, t("ch_train"), TRAIN_COLOR),
        ("val_accuracy", 2, t("ch_val"), VAL_COLOR),
    ):
        if history.get(key):
            fig.add_trace(go.Scatter(x=epochs, y=history[key], name=name, mode="lines+markers",
                                     line={"color": color}, legendgroup=name,
                                     showlegend=col == 1), 1, col)  # fmt: skip
    if overfit:
        for col in range(1, len(titles) + 1):
            fig.add_vline(x=overfit, line_dash="dash", line_color="gray", row=1, col=col)
        fig.add_annotation(x=overfit, y=1.02, yref="paper", xref="x", text=t("ch_overfit"),
                           showarrow=False, font={"size": 11})  # fmt: skip
    fig.update_xaxes(title_text=t("ch_epoch"))
    if 1 < len(epochs) <= 12:
        fig.update_xaxes(dtick=1)  # whole epochs (Plotly would tick 1.5, 2.5...)
    fig.update_layout(height=330, margin={"t": 40, "b": 10, "l": 10, "r": 10},
                      legend={"orientation": "h", "y": -0.25})  # fmt: skip
    return localized(fig)


def localized(fig):
    """``fig`` with the session language's decimal and thousands separators on its axes
    and hover labels (Plotly writes 0.9 / 1,000 unless told: Spanish is 0,9 / 1.000)."""
    thousands, decimal = SEPARATORS[lang()]
    fig.update_layout(separators=decimal + thousands)
    return fig


def _category_axis(names: list[str], **more) -> dict:
    """An axis of text categories with one tick per name, every name written: digits'
    classes "0".."9" would otherwise make a numeric axis labelled 0, 2, 4..."""
    return {"type": "category", "tickmode": "array", "tickvals": names, "ticktext": names,
            "automargin": True, **more}  # fmt: skip


def confusion(matrix, classes: list[str], normalized: bool):
    """The confusion matrix (true class down, predicted across) whose cells can be clicked.

    A heatmap draws it; Streamlit's on_select returns nothing for heatmap clicks
    (streamlit#8760), so a scatter of invisible markers at the cell centres, carrying the
    counts as text, takes the clicks: a point comes back with its cell number (customdata).
    Both axes name every class; long names are slanted so that neighbours do not overlap.
    """
    classes = [html.escape(c) for c in classes]  # Plotly renders some HTML tags in labels
    n = len(classes)
    flat = [v for row in matrix for v in row]
    top = max(flat) or 1
    text = [num(v, 2) if normalized else num(v) for v in flat]
    fig = go.Figure(go.Heatmap(z=matrix, x=classes, y=classes, colorscale="Blues", zmin=0,
                               zmax=top, showscale=False, hoverinfo="skip"))  # fmt: skip
    fig.add_trace(go.Scatter(
        x=[classes[k % n] for k in range(n * n)], y=[classes[k // n] for k in range(n * n)],
        mode="markers+text", text=text, customdata=list(range(n * n)),
        marker={"symbol": "square", "size": 30, "color": "rgba(0,0,0,0)"},
        textfont={"color": ["white" if v > 0.55 * top else "#222" for v in flat]},
        hovertemplate=t("ch_cm_hover") + "<extra></extra>", showlegend=False,
    ))  # fmt: skip
    slant = -40 if max(map(len, classes)) > 3 else 0  # "0".."9" stay upright
    fig.update_yaxes(_category_axis(classes, autorange="reversed", title_text=t("ch_true")))
    fig.update_xaxes(_category_axis(classes, side="top", tickangle=slant,
                                    title_text=t("ch_predicted")))  # fmt: skip
    fig.update_layout(height=560, clickmode="event+select", plot_bgcolor="white",
                      margin={"t": 10, "b": 10, "l": 10, "r": 10})  # fmt: skip
    return localized(fig)


def per_class(classes: list[str], values, title: str):
    """A horizontal bar per class, the lowest value at the top (where a model fails is
    what a reader looks for first), each bar labelled with its percentage."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    names = [html.escape(classes[i]) for i in order]
    fig = go.Figure(go.Bar(
        x=values[order], y=names, orientation="h", marker={"color": "#1f77b4"},
        text=[pct(v) for v in values[order]], textposition="auto",
        hovertemplate="%{y}: %{text}<extra></extra>",
    ))  # fmt: skip
    fig.update_yaxes(_category_axis(names, autorange="reversed"))
    ticks = [0, 0.2, 0.4, 0.6, 0.8, 1]
    fig.update_xaxes(range=[0, 1.04], tickvals=ticks, ticktext=[pct(v, 0) for v in ticks],
                     title_text=title)  # fmt: skip
    fig.update_layout(height=60 + 26 * len(names), showlegend=False,
                      margin={"t": 10, "b": 10, "l": 10, "r": 10})  # fmt: skip
    return localized(fig)


def counts(frame, x_title: str, height: int | None = None):
    """Horizontal bars of counts, one row per index label, one colour per column (a
    dataset's images per class, per split), with the language's thousands separator
    (st.bar_chart writes 1,000 in every language)."""
    fig = go.Figure([go.Bar(x=frame[c], y=[html.escape(str(i)) for i in frame.index],
                            name=html.escape(str(c)), orientation="h")
                     for c in frame.columns])  # fmt: skip
    fig.update_yaxes(_category_axis([html.escape(str(i)) for i in frame.index],
                                    autorange="reversed"))  # fmt: skip
    fig.update_layout(barmode="group", height=height or 60 + 24 * len(frame.index),
                      xaxis_title=x_title, showlegend=len(frame.columns) > 1,
                      legend={"orientation": "h", "y": -0.2},
                      margin={"t": 10, "b": 10, "l": 10, "r": 10})  # fmt: skip
    return localized(fig)
