"""Every Plotly figure the pages draw, built from plain data (histories, arrays, lists): the
pages pick what to show and call one of these."""

from __future__ import annotations

import html
import itertools
import math

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ui.i18n import class_name, lang, num, pct, t
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


def _legend_below(fig, height: int, y: float, top: int = 40):
    fig.update_layout(height=height, margin={"t": top, "b": 10, "l": 10, "r": 10},
                      legend={"orientation": "h", "y": y})  # fmt: skip
    return localized(fig)


def overlay(histories: list[dict], names: list[str]):
    """Validation (solid) and training (dotted) loss and accuracy of several runs, per epoch
    (Compare)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(t("ch_loss"), t("ch_accuracy")))
    for k, (h, name) in enumerate(zip(histories, names, strict=True)):
        color = qualitative.Plotly[k % len(qualitative.Plotly)]
        name = html.escape(name)  # Plotly renders <a>, <b>...
        for col, metric in ((1, "loss"), (2, "accuracy")):
            fig.add_trace(go.Scatter(x=h["epoch"], y=h[f"val_{metric}"], name=name,
                                     legendgroup=name, showlegend=col == 1,
                                     line={"color": color}), 1, col)  # fmt: skip
            fig.add_trace(go.Scatter(x=h["epoch"], y=h[f"train_{metric}"], name=name,
                                     legendgroup=name, showlegend=False,
                                     line={"color": color, "dash": "dot"}), 1, col)  # fmt: skip
    fig.update_xaxes(title_text=t("ch_epoch"))
    return _legend_below(fig, 380, -0.2)


PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939")  # fmt: skip


def variant_curves(series: list[tuple[str, dict, bool]], panels: list[tuple[str, str]]):
    """Validation curves of an experiment's variants, one colour each: ``series`` is
    (name, history, diverged) per variant, ``panels`` (history key, title) per panel; an
    accuracy is drawn as its error (1 - accuracy). A diverged run is dotted, ending in a
    cross."""
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[title for _, title in panels])
    for i, (name, h, diverged) in enumerate(series):
        name = html.escape(f"{name} ({t('tr_state_diverged')})" if diverged else name)
        color = PALETTE[i % len(PALETTE)]
        for col, (key, _) in enumerate(panels, start=1):
            if not h.get(key):
                continue
            y = [1 - a for a in h[key]] if "accuracy" in key else h[key]
            fig.add_trace(go.Scatter(
                x=h["epoch"], y=y, name=name, legendgroup=name, showlegend=col == 1,
                mode="lines+markers", line={"color": color, "dash": "dot" if diverged else None},
                marker={"symbol": ["circle"] * (len(y) - 1) + ["x" if diverged else "circle"],
                        "size": [6] * (len(y) - 1) + [12 if diverged else 6]}),
                1, col)  # fmt: skip
    fig.update_xaxes(title_text=t("ch_epoch"), dtick=1)
    return _legend_below(fig, 360, -0.3)


def error_bars(names: list[str], top1: list, top5: list, diverged: list[str]):
    """Test top-1 and top-5 error per variant (None: no figure); the ``diverged`` variants
    as hatched grey bars."""
    names = [html.escape(n) for n in names]
    fig = go.Figure([go.Bar(x=names, y=top1, name=t("ex_top1"), marker_color="#d62728",
                            texttemplate="%{y:.3f}", textposition="outside"),
                     go.Bar(x=names, y=top5, name=t("ex_top5"), marker_color="#ff9896",
                            texttemplate="%{y:.3f}", textposition="outside")])  # fmt: skip
    if diverged:
        fig.add_trace(go.Bar(x=[html.escape(n) for n in diverged], y=[1.0] * len(diverged),
                             name=t("tr_state_diverged"),
                             marker={"color": "#cccccc", "pattern": {"shape": "x"}},
                             text=[t("tr_state_diverged")] * len(diverged),
                             textposition="inside"))  # fmt: skip
    fig.update_layout(barmode="group", yaxis_title=t("ex_test_error"))
    return _legend_below(fig, 380, 1.1, top=20)


def parallel(axes: dict[str, list], log: set[str], accuracy: list[float]):
    """Parallel coordinates: one axis per swept setting ({label: values}; numbers on a
    linear axis, or a log10 one for the labels in ``log``; anything else as evenly spaced
    categories), then the test accuracy."""
    dims = []
    for name, values in axes.items():
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            scaled = name in log and min(values) > 0
            dims.append({"label": f"log10 {name}" if scaled else name,
                         "values": [math.log10(v) if scaled else v for v in values]})  # fmt: skip
        else:
            labels = sorted({str(v) for v in values})
            dims.append({"label": name, "values": [labels.index(str(v)) for v in values],
                         "tickvals": list(range(len(labels))), "ticktext": labels})  # fmt: skip
    dims.append({"label": t("ex_accuracy"), "values": accuracy})
    fig = go.Figure(go.Parcoords(dimensions=dims, line={
        "color": accuracy, "colorscale": "Viridis", "showscale": True}))  # fmt: skip
    fig.update_layout(height=360, margin={"t": 50, "b": 20, "l": 60, "r": 60})
    return localized(fig)


def paper_chart(x: list[str], paper: list, ours: list, likely: list, marks: list, y_title: str):
    """A paper's numbers (dashed; None where it most likely misprinted one) against ours
    per setting ``x``; a likely value stands apart as an open circle with its ``marks``
    note (None: no note), and the paper's line skips the misprint."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=paper, name=t("ae_paper"), mode="lines+markers",
                             line={"dash": "dash"}, connectgaps=True))  # fmt: skip
    fig.add_trace(go.Scatter(x=x, y=ours, name=t("ae_ours"), mode="lines+markers"))
    if any(v is not None for v in likely):
        fig.add_trace(go.Scatter(x=x, y=likely, name=t("ae_likely"), mode="markers",
                                 marker={"symbol": "circle-open", "size": 10,
                                         "color": "#1f77b4"}))  # fmt: skip
        for xi, y, mark in zip(x, likely, marks, strict=True):
            if mark is not None:
                fig.add_annotation(x=xi, y=y, ay=-40, text=mark, showarrow=True, arrowhead=2,
                                   font={"size": 11})  # fmt: skip
    fig.update_layout(yaxis_title=y_title, xaxis_type="category")
    return _legend_below(fig, 260, -0.3, top=10)


MODE_COLORS = {"finetune": "#1f77b4", "frozen": "#ff7f0e", "random": "#7f7f7f"}


def mode_curves(by_mode: dict[str, dict]):
    """Train (dotted) and validation accuracy per epoch of the autoencoder lab's three
    classifiers ({encoder mode: history})."""
    fig = go.Figure()
    for mode, h in by_mode.items():
        for key, dash in (("train_accuracy", "dot"), ("val_accuracy", "solid")):
            name = f"{t(f'ae_mode_{mode}')} · {t(f'ae_{key}')}"
            fig.add_trace(go.Scatter(x=h["epoch"], y=h[key], mode="lines+markers", name=name,
                                     line={"color": MODE_COLORS[mode], "dash": dash}))  # fmt: skip
    fig.update_layout(height=320, margin={"t": 10, "b": 10, "l": 10, "r": 10},
                      xaxis_title=t("ch_epoch"), yaxis_title=t("ch_accuracy"))  # fmt: skip
    return localized(fig)


def class_map(coords, y, classes: list[str], revision: str, pred=None, trace=go.Scattergl,
              ring: bool = False, only_wrong: bool = False, height: int = 640,
              size: int = 4, select: bool = True):  # fmt: skip
    """A 2-D map of images (``coords`` (N, 2), true classes ``y``), one trace per class;
    returns (figure, the indices into ``y`` of each trace's points).

    WebGL traces by default (10,000 points); a live preview passes go.Scatter. Hover shows
    the true and (with ``pred``) predicted class, and the image's index (customdata: the
    hover pictures find it there). With predictions, ``ring`` adds a trace of open rings
    around the misclassified images (the dots stay visible inside: a thousand filled crosses
    hid the very regions they marked), and ``only_wrong`` keeps the misclassified alone.
    ``select``: a drag draws a lasso (the page reads the selection), else it zooms.
    """
    names = [html.escape(class_name(c)) for c in classes]  # plotly renders some HTML tags
    palette = qualitative.D3 if len(names) <= 10 else qualitative.Alphabet
    colors = [palette[c % len(palette)] for c in range(len(names))]
    true, predicted = t("emb_true"), t("emb_pred")
    fig, traces = go.Figure(), []
    alone = only_wrong and pred is not None
    shown = (pred != y) if alone else np.ones(len(y), dtype=bool)
    size = size + 2 if alone else size  # the few points left stand out a little more
    for c, name in enumerate(names):
        idx = np.flatnonzero((y == c) & shown)
        hover = f"{true}: {name}"
        text = None
        if pred is not None:
            text = [names[p] for p in pred[idx]]
            hover += f"<br>{predicted}: %{{text}}"
        fig.add_trace(trace(
            x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=name, text=text,
            customdata=idx, hovertemplate=hover + "<br>#%{customdata}<extra></extra>",
            marker={"size": size, "color": colors[c], "opacity": 0.75},
        ))  # fmt: skip
        traces.append(idx)
    if ring and pred is not None:
        wrong = np.flatnonzero(pred != y)
        fig.add_trace(trace(
            x=coords[wrong, 0], y=coords[wrong, 1], mode="markers",
            name=t("emb_wrong_trace", n=num(len(wrong))), customdata=wrong,
            text=[f"{true}: {names[y[i]]}<br>{predicted}: {names[pred[i]]}" for i in wrong],
            hovertemplate="%{text}<br>#%{customdata}<extra></extra>",
            marker={"symbol": "circle-open", "size": 9, "color": "rgba(0,0,0,0.55)",
                    "line": {"width": 1}},
        ))  # fmt: skip
        traces.append(wrong)
    fig.update_layout(
        height=height, dragmode="lasso" if select else "zoom",
        uirevision=revision,  # zoom survives reruns
        margin={"t": 10, "b": 10, "l": 10, "r": 10},
        legend={"itemsizing": "constant", "y": 0.94, "yanchor": "top"},  # below the tool bar
    )  # fmt: skip
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x", scaleratio=1)
    return fig, traces


def reliability(found: dict, temperature: float):
    """A reliability diagram: one bar per bin of confidence at its accuracy (hover: its
    images and mean confidence), the diagonal a calibrated model would follow, and each
    bin's gap to its mean confidence in red. A click on a bar selects its bin (point index:
    the bin's number, empty bins included)."""
    edges = found["edges"]
    centres = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
    width = edges[1] - edges[0]
    accuracy = [a if a is not None else 0 for a in found["accuracy"]]
    sure = [c if c is not None else m for c, m in zip(found["confidence"], centres, strict=True)]
    bins = zip(itertools.pairwise(edges), found["counts"], found["accuracy"],
               found["confidence"], strict=True)  # fmt: skip
    words = [t("ch_bin_hover", lo=pct(lo, 0), hi=pct(hi, 0), n=num(n),
               acc=pct(a) if n else "—", conf=pct(c) if n else "—")
             for (lo, hi), n, a, c in bins]  # fmt: skip
    fig = go.Figure()
    fig.add_trace(go.Bar(x=centres, y=accuracy, width=width * 0.92, name=t("ch_bin_accuracy"),
                         marker={"color": TRAIN_COLOR}, customdata=words,
                         hovertemplate="%{customdata}<extra></extra>"))  # fmt: skip
    fig.add_trace(go.Bar(x=centres, y=[s - a if n else 0 for s, a, n in
                                       zip(sure, accuracy, found["counts"], strict=True)],
                         base=accuracy, width=width * 0.92, name=t("ch_bin_gap"),
                         marker={"color": "rgba(214,39,40,0.35)",
                                 "line": {"color": "#d62728", "width": 1}},
                         hoverinfo="skip"))  # fmt: skip
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name=t("ch_bin_ideal"),
                             line={"color": "#555", "dash": "dash"}, hoverinfo="skip"))  # fmt: skip
    ticks = [0, 0.2, 0.4, 0.6, 0.8, 1]
    labels = [pct(v, 0) for v in ticks]
    fig.update_xaxes(range=[0, 1], tickvals=ticks, ticktext=labels,
                     title_text=t("ch_bin_x", temp=num(temperature, 2)))  # fmt: skip
    fig.update_yaxes(range=[0, 1], tickvals=ticks, ticktext=labels, title_text=t("ch_bin_y"))
    fig.update_layout(barmode="overlay", height=380, clickmode="event+select",
                      legend={"orientation": "h", "y": 1.1},
                      margin={"t": 30, "b": 10, "l": 10, "r": 10})  # fmt: skip
    return localized(fig)


REPLAY_FRAMES = 60  # epochs a replay shows at most (a long run's, evenly picked, the last kept)


def moving_map(frames: np.ndarray, y, classes: list[str], height: int = 480):
    """A live map's replay: the last epoch's points, one animation frame per epoch (the
    same points, moved; at most REPLAY_FRAMES of them), a slider over the epochs and a play
    button; the axes stay put, so what moves is the network's doing."""
    fig, traces = class_map(frames[-1], y, classes, "moving-map", trace=go.Scatter,
                            height=height, select=False, size=5)  # fmt: skip
    reach = float(np.abs(frames).max()) * 1.05 or 1.0
    fig.update_xaxes(range=[-reach, reach], autorange=False)
    fig.update_yaxes(range=[-reach, reach], autorange=False)
    epochs = np.unique(np.linspace(1, len(frames), min(len(frames), REPLAY_FRAMES)).round()
                       .astype(int))  # fmt: skip
    fig.frames = [go.Frame(name=str(e), data=[go.Scatter(x=frames[e - 1][idx, 0],
                                                         y=frames[e - 1][idx, 1])
                                              for idx in traces])
                  for e in epochs]  # fmt: skip
    step = {"mode": "immediate", "frame": {"duration": 0, "redraw": True},
            "transition": {"duration": 250}}  # fmt: skip
    fig.update_layout(
        sliders=[{"active": len(frames) - 1, "currentvalue": {"prefix": t("ch_epoch") + " "},
                  "pad": {"t": 30}, "x": 0.12, "len": 0.88,
                  "steps": [{"method": "animate", "label": str(e), "args": [[str(e)], step]}
                            for e in epochs]}],
        updatemenus=[{"type": "buttons", "showactive": False, "x": 0, "y": 0, "xanchor": "left",
                      "yanchor": "top", "pad": {"t": 40},
                      "buttons": [{"label": t("ch_play"), "method": "animate",
                                   "args": [None, {"frame": {"duration": 700, "redraw": True},
                                                   "transition": {"duration": 300},
                                                   "fromcurrent": False}]}]}],
        margin={"t": 10, "b": 90, "l": 10, "r": 10},
    )  # fmt: skip
    return fig


def pretraining_chart(rows: list[dict], starts: list[str], paper: float | None = None):
    """Test accuracy against labelled images (log scale), one line per start, each point a
    stored run; ``paper``: seed 001's reported accuracy, dashed, for comparison."""
    fig = go.Figure()
    palette = qualitative.D3
    for k, start in enumerate(starts):
        mine = sorted((r for r in rows if r["start"] == start), key=lambda r: r["labels"])
        fig.add_trace(go.Scatter(
            x=[r["labels"] for r in mine], y=[r["accuracy"] for r in mine],
            mode="lines+markers", name=t(f"pt_start_{start}"),
            line={"color": palette[k % len(palette)], "width": 3}, marker={"size": 9},
            customdata=[pct(r["accuracy"]) for r in mine],
            hovertemplate="%{x} → %{customdata}<extra>%{fullData.name}</extra>",
        ))  # fmt: skip
    if paper is not None:
        fig.add_hline(y=paper, line={"dash": "dash", "color": "#555"},
                      annotation_text=t("pt_paper_line", acc=pct(paper, 0)),
                      annotation_position="bottom right")  # fmt: skip
    ticks = sorted({r["labels"] for r in rows}) or [100, 1000]
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[num(v) for v in ticks],
                     title_text=t("pt_x"))  # fmt: skip
    fig.update_yaxes(tickformat=".0%", title_text=t("pt_y"))
    fig.update_layout(height=420, legend={"orientation": "h", "y": 1.12},
                      margin={"t": 30, "b": 10, "l": 10, "r": 10})  # fmt: skip
    return localized(fig)
