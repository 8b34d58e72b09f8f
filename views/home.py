"""CNN Classroom: the Streamlit entry point (the home page).

make run        # or: streamlit run app.py
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core import models, presets
from ui.i18n import class_name, t
from ui.state import dataset, start, stored_runs

SAMPLES_PER_CLASS = 12


@st.cache_data(show_spinner=False)
def registry_rows() -> list[dict]:
    """One row per registered model, with its parameter count on 28x28 greyscale input
    (counted without building real weights: no backbone's weights are read or downloaded)."""
    return [{"name": e.name, "summary": e.summary, "params": models.parameter_count(e.name)}
            for e in models.list_models()]  # fmt: skip


def sample_strip(images: np.ndarray) -> np.ndarray:
    """(N, 1, H, W) uint8 -> one (H, N*W) strip with a 2-pixel gap, for st.image."""
    n, _, h, w = images.shape
    strip = np.full((h, n * (w + 2) - 2), 40, dtype=np.uint8)
    for i, img in enumerate(images[:, 0]):
        strip[:, i * (w + 2) : i * (w + 2) + w] = img
    return strip


def dataset_section(data) -> None:
    st.header(t("dataset"))
    st.write(
        t(
            "dataset_summary",
            name=data.name,
            train=f"{len(data.y_train):,}",
            val=f"{len(data.y_val):,}",
            test=f"{len(data.y_test):,}",
            size=data.size,
            classes=data.num_classes,
        )
    )
    st.caption(t("source", source=data.source))
    grid, balance = st.columns([3, 2])
    with grid:
        st.subheader(t("samples"))
        for c, name in enumerate(data.classes):
            idx = np.flatnonzero(data.y_test == c)[:SAMPLES_PER_CLASS]
            label, strip = st.columns([1, 4])
            label.markdown(f"**{class_name(name)}**")
            strip.image(sample_strip(data.x_test[idx]), width="stretch", clamp=True)
    with balance:
        st.subheader(t("balance"))
        counts = pd.DataFrame(
            {t("class"): [class_name(c) for c in data.classes], t("images"): data.class_counts()}
        )
        st.bar_chart(counts, x=t("class"), y=t("images"), horizontal=True)


def models_section() -> None:
    st.header(t("models"))
    rows = registry_rows()
    st.dataframe(
        pd.DataFrame(rows).rename(
            columns={"name": t("model"), "summary": t("what"), "params": t("parameters")}
        ),
        hide_index=True,
        width="stretch",
    )
    presets_section()


def presets_section() -> None:
    """One click reproduces a seed paper's experiment (or trains our fast default)."""
    st.subheader(t("presets"))
    for p in presets.PRESETS.values():
        c1, c2, c3 = st.columns([1, 5, 2])
        if c1.button(t("run_preset"), key=f"preset_{p.name}", help=t("run_preset_help")):
            start(p.config)
            st.switch_page("views/train.py")
        c2.markdown(f"**{p.name}** · `{p.config.model.name}` — {p.summary}")
        if p.paper:
            c3.caption(t("paper_said", source=p.paper["source"], acc=f"{p.paper['accuracy']:.4f}"))


def runs_section() -> None:
    st.header(t("runs"))
    runs = stored_runs()
    if not runs:
        st.info(t("ev_no_runs"))
        return
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "run": m["run_id"][:8],
                    t("model"): m["model"],
                    t("accuracy"): round(m["test"]["accuracy"], 4),
                    t("macro_f1"): round(m["test"]["macro_f1"], 4),
                    t("epochs"): len(m["history"]["epoch"]),
                    t("seconds"): round(m["wall_seconds"], 1),
                }
                for m in runs
            ]
        ),
        hide_index=True,
        width="stretch",
    )


def main() -> None:
    st.title(t("title"))
    st.write(t("tagline"))
    dataset_section(dataset())
    models_section()
    runs_section()


main()
