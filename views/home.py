"""CNN Classroom: the Streamlit entry point (the home page).

make run        # or: streamlit run app.py
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import streamlit as st

from core import models, presets
from ui.charts import counts
from ui.i18n import (
    class_name,
    dataset_name,
    model_summary,
    num,
    paper_source,
    preset_summary,
    styled,
    t,
)
from ui.job_panel import start
from ui.runs import names
from ui.state import LOAD, dataset, stored_runs
from ui.text import DASH, plain

SAMPLES_PER_CLASS = 12
# core.data's counts in its note on a folder's images, and their keys in the catalogue.
NOTES = {"non-image files skipped": "source_skipped", "class folders renamed": "source_renamed",
         "unreadable images skipped": "source_unreadable"}  # fmt: skip
_COUNTS = "|".join(NOTES)


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


def source_text(note: str) -> str:
    """core.data's English note on where the images came from, in the page's language."""
    if note == "scikit-learn's bundled digits":
        return t("source_digits")
    if match := re.fullmatch(rf"from (.+?)((?: \(\d+ (?:{_COUNTS})\))*)", note):
        counts = re.findall(rf" \((\d+) ({_COUNTS})\)", match[2])
        return t("source_from", path=match[1]) + "".join(t(NOTES[what], n=num(int(n)))
                                                         for n, what in counts)  # fmt: skip
    return note


def dataset_section(data) -> None:
    st.header(t("dataset"))
    st.write(
        t(
            "dataset_summary",
            name=dataset_name(data.name),
            train=num(len(data.y_train)),
            val=num(len(data.y_val)),
            test=num(len(data.y_test)),
            size=data.size,
            classes=data.num_classes,
        )
    )
    st.caption(t("source", source=source_text(data.source)))
    grid, balance = st.columns([3, 2])
    with grid:
        st.subheader(t("samples"))
        for c, name in enumerate(data.classes):
            idx = np.flatnonzero(data.y_test == c)[:SAMPLES_PER_CLASS]
            label, strip = st.columns([1, 4])
            label.markdown(f"**{plain(class_name(name))}**")
            strip.image(sample_strip(data.x_test[idx]), width="stretch", clamp=True)
    with balance:
        st.subheader(t("balance"))
        per_class = pd.DataFrame({t("images"): data.class_counts()},
                                 index=[class_name(c) for c in data.classes])  # fmt: skip
        st.plotly_chart(counts(per_class, t("images")), key="home_balance")


def models_section() -> None:
    st.header(t("models"))
    rows = [{t("model"): r["name"], t("what"): model_summary(r["name"]),
             t("parameters"): r["params"]} for r in registry_rows()]  # fmt: skip
    st.dataframe(styled(pd.DataFrame(rows)), hide_index=True, placeholder=DASH, width="stretch")
    presets_section()


def presets_section() -> None:
    """One click reproduces a seed paper's experiment (or trains our fast default)."""
    st.subheader(t("presets"))
    for p in presets.PRESETS.values():
        c1, c2, c3 = st.columns([1, 5, 2])
        if c1.button(t("run_preset"), key=f"preset_{p.name}", help=t("run_preset_help")):
            start(p.config)
            st.session_state[LOAD] = p.config  # the Train page's form shows the preset
            # The URL keeps the visitor's token, language and the queued job: a refresh
            # of the Train page must find them (a page switch would drop them).
            st.switch_page("views/train.py", query_params=st.query_params.to_dict())
        c2.markdown(f"**{p.name}** · `{p.config.model.name}` — {preset_summary(p.name)}")
        if p.paper:
            c3.caption(t("paper_said", source=paper_source(p.paper["source"]),
                         acc=num(p.paper["accuracy"], 4)))  # fmt: skip


def runs_section() -> None:
    st.header(t("runs"))
    runs = stored_runs()
    if not runs:
        st.info(t("ev_no_runs"))
        return
    named = names()
    rows = [
        {
            t("run_name"): named.get(m["run_id"], m["run_id"][:8]),
            t("model"): m["model"],
            t("dataset_column"): dataset_name(m["dataset"]["name"]),
            t("accuracy"): m["test"]["accuracy"],
            t("macro_f1"): m["test"]["macro_f1"],
            t("epochs"): len(m["history"]["epoch"]),
            t("seconds"): round(m["wall_seconds"], 1),
        }
        for m in runs
    ]
    st.dataframe(styled(pd.DataFrame(rows)), hide_index=True, placeholder=DASH, width="stretch")


def main() -> None:
    st.title(t("title"))
    st.write(t("tagline"))
    dataset_section(dataset())
    models_section()
    runs_section()


main()
