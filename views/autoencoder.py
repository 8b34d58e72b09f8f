"""Autoencoder lab: seed 001's study (an autoencoder that pretrains a classifier), runnable and
visible: reconstructions improving epoch by epoch, the latent space as a map, the paper's
Tables 1-3 filled with our numbers, and fine-tuned, frozen and random encoders compared."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core import UserError, embed, seed001, tasks
from core.config import DataConfig, from_dict
from ui.charts import class_map, confusion, curves, mode_curves, paper_chart
from ui.i18n import class_name, decimal_slider, num, paper_source, rate, styled, t
from ui.job_panel import show_job, start
from ui.runs import model, pick_run
from ui.state import dataset, jobs, store, stored_runs, user
from ui.text import DASH
from ui.thumbs import MAP_CONFIG, hover_thumbs

KEY = "ae_job"  # this page's job in the session and the URL (the Train page has "job")
SCALE = 3  # preview pixels per image pixel
LATENTS = (64, 128, 256, 512)
LRS = (1e-2, 1e-3, 1e-4)
MODES = ("finetune", "frozen", "random")


def pairs(originals: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """uint8 (K, 1, H, W) twice -> one picture: originals on top, reconstructions below."""
    top = np.concatenate(list(originals[:, 0]), axis=1)
    bottom = np.concatenate(list(reconstructions[:, 0]), axis=1)
    gap = np.full((2, top.shape[1]), 128, np.uint8)
    grid = np.concatenate([top, gap, bottom])
    return np.kron(grid, np.ones((SCALE, SCALE), np.uint8))


@st.cache_data(show_spinner=False, max_entries=16)
def stored_pairs(run_id: str) -> np.ndarray:
    """A stored run's preview: what its jobs showed after each epoch, by its final model."""
    net, meta = model(run_id)
    task = tasks.of(meta["model"])
    shown = task.preview(net, task.preview_images(from_dict(meta["config"]).data), 0)
    return pairs(shown["originals"], shown["reconstructions"])


# -- 1. train one autoencoder ---------------------------------------------------------------


def train_section() -> None:
    st.subheader(t("ae_train"))
    c = st.columns(6)
    data = c[0].selectbox(t("tr_dataset"), ["fashion-mnist", "digits"], key="ae_dataset")
    latent = c[1].selectbox(t("ae_latent"), LATENTS, index=1, help=t("ae_latent_help"))
    dropout = decimal_slider(c[2], t("ae_dropout"), 0.0, 0.5, 0.1, help=t("ae_dropout_help"))
    lr = c[3].selectbox(t("ae_lr"), LRS, index=1, format_func={v: rate(v) for v in LRS}.get)
    epochs = c[4].number_input(t("ae_epochs"), 1, 30, 5, help=t("ae_epochs_help"))
    pooling = c[5].toggle(t("ae_pooling"), True, help=t("ae_pooling_help"))
    cfg = seed001.autoencoder(latent, dropout, lr, pooling, int(epochs), DataConfig(data))
    job_id = st.session_state.get(KEY) or st.query_params.get(KEY)
    job = jobs().get(job_id, user()) if job_id else None
    running = job is not None and not job.is_final
    b1, b2, _ = st.columns([1, 1, 4])
    if b1.button(t("tr_start"), type="primary", disabled=running, key="ae_start"):
        try:
            start(cfg, KEY)
        except UserError as e:
            st.error(str(e))
        else:
            st.rerun()  # drawn again with Start disabled while the run is live
    if job is not None and not job.is_final and b2.button(t("tr_stop"), key="ae_stop"):
        jobs().stop(job.id, user())
    if (stored := st.session_state.get(f"{KEY}_stored")) and job is None:
        stored_view(stored)
    elif job is not None:
        show_job(job, "ae_live", done_ui, reconstructions_ui, loss_digits=4)
    else:
        st.caption(t("ae_train_hint"))


def mse_line(meta: dict) -> str:
    line = t("ae_test_mse", mse=num(meta["test"]["mse"], 4))
    if found := seed001.paper_mse(meta["config"]):
        line += " · " + t("ae_paper_mse", where=paper_source(found[0]), mse=num(found[1], 3))
    return line


def stored_view(run_id: str) -> None:
    meta = store().meta(run_id)
    if meta is None:
        return
    st.success(mse_line(meta))
    left, right = st.columns(2)
    left.plotly_chart(curves(meta["history"]), key=f"ae_curves_{run_id}")
    right.image(stored_pairs(run_id), caption=t("ae_pairs_final"))


def done_ui(snap: dict) -> None:
    if meta := store().meta(snap["run_id"]):
        st.success(mse_line(meta))


def reconstructions_ui(where, snap: dict) -> None:
    """Beside a job's curves: its test images over their reconstructions, after the last
    epoch that ended."""
    if preview := snap["preview"]:
        where.image(pairs(preview["originals"], preview["reconstructions"]),
                    caption=t("ae_pairs_epoch", epoch=preview["epoch"]))  # fmt: skip
    else:
        where.caption(t("ae_pairs_soon"))


# -- 2. the latent space -------------------------------------------------------------------

MAP_BOX = "ae_map_box"  # the latent map's container: the hover pictures find the chart in it


def latent_section(runs: dict) -> None:
    st.subheader(t("ae_map"))
    st.caption(t("ae_map_intro"))
    if not runs:
        st.info(t("ae_no_runs"))
        return
    meta = pick_run(t("ae_run"), "ae_map_run", task="reconstruct", empty="ae_no_runs")
    run_id = meta["run_id"]
    labels = {"pca": "PCA", "tsne": "t-SNE"}
    method = st.radio(t("ae_method"), list(labels), format_func=labels.__getitem__,
                      horizontal=True, key="ae_map_method")  # fmt: skip
    data = dataset(from_dict(meta["config"]).data)
    with st.spinner(t("ae_map_computing")):
        found = embed.projection(data, method, run_id, model=lambda: model(run_id)[0],
                                 root=store().root)  # fmt: skip
    fig, _ = class_map(found.coords, data.y_test, data.classes, found.name, height=520, size=3,
                       select=False)  # fmt: skip
    with hover_thumbs(MAP_BOX, data.x_test, data.identity):
        st.plotly_chart(fig, key=f"ae_map_{run_id}_{method}", config=MAP_CONFIG)


# -- 3. seed 001's tables ------------------------------------------------------------------


def sweep_configs(epochs: int) -> dict:
    """{(table, value): RunConfig} for Tables 1-3 and the appendix's pooling pair."""
    out = {(table, value): cfg for table in seed001.SWEEPS
           for value, cfg in seed001.sweep(table, epochs)}  # fmt: skip
    for pooling in (True, False):
        out[("pooling", pooling)] = seed001.autoencoder(128, 0.1, 1e-3, pooling, epochs)
    return out


def sweep_section() -> None:
    st.subheader(t("ae_tables"))
    st.caption(t("ae_tables_intro"))
    epochs = int(st.number_input(t("ae_epochs"), 1, 30, 5, key="ae_sweep_epochs",
                                 help=t("ae_epochs_help")))  # fmt: skip
    configs = sweep_configs(epochs)
    if st.button(t("ae_run_sweep", n=len(configs)), key="ae_sweep"):
        try:
            asked = jobs().request(list(configs.values()), user())
            st.toast(t("ae_submitted", n=len(asked.queued)))
        except UserError as e:
            st.error(str(e))
    sweep_results(epochs)


def sweep_results(epochs: int) -> None:
    """The tables, redrawn every 3 s only while one of this visitor's runs for them is
    pending (a timer on a page left open would redraw them forever)."""
    if _sweep_pending(epochs):
        sweep_results_live(epochs)
    else:
        draw_sweep(epochs)


def _sweep_pending(epochs: int) -> bool:
    runs = jobs().states(list(sweep_configs(epochs).values()), user())
    return any(run.job is not None and not run.job.is_final for run in runs)


@st.fragment(run_every=3)
def sweep_results_live(epochs: int) -> None:
    draw_sweep(epochs)
    if not _sweep_pending(epochs):
        st.rerun()  # once more, without the timer


def other_epochs(epochs: int) -> list[int]:
    """The epoch counts (other than ``epochs``) at which stored runs fill some of the
    tables' cells: the cells count only runs of exactly the chosen count."""
    counts = {len(m["history"]["epoch"]) for m in stored_runs("reconstruct")}
    found = []
    for count in sorted(counts - {epochs}):
        ids = {run.run_id for run in jobs().states(list(sweep_configs(count).values()), user())}
        if any(m["run_id"] in ids for m in stored_runs("reconstruct")):
            found.append(count)
    return found


def draw_sweep(epochs: int) -> None:
    configs = sweep_configs(epochs)
    ours, state = {}, {}
    for key, run in zip(configs, jobs().states(list(configs.values()), user()), strict=True):
        live = run.job is not None and not run.job.is_final
        ours[key] = run.meta["test"]["mse"] if run.meta else None
        waiting = t("tr_state_" + run.job.state) if live else None
        state[key] = t("ae_done") if run.meta else waiting or t("ae_not_trained")
    filled = sum(v is not None for v in ours.values())
    st.caption(t("ae_cells_from", epochs=epochs, filled=filled, total=len(ours)))
    if others := other_epochs(epochs):
        st.caption(t("ae_cells_elsewhere", epochs=", ".join(map(str, others))))
    columns = st.columns(3)
    for (table, paper), col in zip(seed001.PAPER.items(), columns, strict=True):
        which = {"n": 1, "p": 2, "lr": 3}[table]
        rows = [{table: setting(table, v),
                 t("ae_paper"): paper[v], t("ae_ours"): ours[(table, v)],
                 t("ae_state"): state[(table, v)]} for v in paper]  # fmt: skip
        col.markdown(f"**{t('ae_table', number=which)}** · {t(f'ae_table_{table}')}")
        typos = [i for i, v in enumerate(paper) if (table, v) in seed001.PROBABLE_TYPOS]
        marked = styled(pd.DataFrame(rows), 3).format(lambda v: f"{num(v, 3)} *",
                                                      subset=(typos, [t("ae_paper")]))  # fmt: skip
        col.dataframe(marked, hide_index=True, placeholder=DASH)
        for i in typos:
            value = list(paper)[i]
            col.caption(t("ae_typo", value=num(value, 2), printed=num(paper[value], 3),
                          likely=num(seed001.PROBABLE_TYPOS[(table, value)], 3)))  # fmt: skip
        col.plotly_chart(table_chart(table, paper, ours), key=f"ae_chart_{table}_{epochs}")
    rows = [{t("ae_pooling"): t("ae_yes") if p else t("ae_no"),
             t("ae_paper"): seed001.APPENDIX_MSE[p], t("ae_ours"): ours[("pooling", p)],
             t("ae_state"): state[("pooling", p)]} for p in (True, False)]  # fmt: skip
    st.markdown(f"**{t('ae_appendix')}**")
    st.dataframe(styled(pd.DataFrame(rows), 3), hide_index=True, placeholder=DASH)


def setting(table: str, value: float) -> str:
    """A table's setting as its first column writes it (n whole, p with 2 decimals, lr 4)."""
    return num(value, 0 if table == "n" else (2 if table == "p" else 4))


def table_chart(table: str, paper: dict, ours: dict):
    """The paper's numbers (dashed) and ours per value; a number the paper most likely
    misprinted stands apart, marked, and the paper's line skips it."""
    typos = seed001.PROBABLE_TYPOS
    values = list(paper)
    return paper_chart(
        [setting(table, v) for v in values],
        [None if (table, v) in typos else paper[v] for v in values],
        [ours[(table, v)] for v in values],
        [typos.get((table, v)) for v in values],
        [t("ae_typo_mark", printed=num(paper[v], 3)) if (table, v) in typos else None
         for v in values],
        t("ae_mse_axis"),
    )  # fmt: skip


# -- 4. pretrain a classifier --------------------------------------------------------------


def classifier_runs() -> list[dict]:
    return [m for m in stored_runs("classify") if m["model"] == seed001.CLASSIFIER]


def classifier_section(runs: dict) -> None:
    st.subheader(t("ae_classifier"))
    st.caption(t("ae_classifier_intro", acc=num(seed001.CLASSIFIER_ACCURACY, 2)))
    if not runs:
        st.info(t("ae_no_runs"))
        return
    c1, c2 = st.columns([3, 1])
    with c1:
        encoder = pick_run(t("ae_encoder"), "ae_encoder", task="reconstruct")["run_id"]
    epochs = int(c2.number_input(t("ae_epochs"), 1, 30, 5, key="ae_cls_epochs"))
    if st.button(t("ae_train_three"), key="ae_three"):
        data = DataConfig(**runs[encoder]["config"]["data"])
        try:
            cfgs = [seed001.classifier(encoder, mode, epochs, data) for mode in MODES]
            asked = jobs().request(cfgs, user())
            st.toast(t("ae_submitted", n=len(asked.queued)))
        except UserError as e:
            st.error(str(e))
    comparison(encoder, runs)


def comparison(encoder: str, runs: dict) -> None:
    """The three classifiers, redrawn every 3 s only while one of them is pending."""
    if _classifiers_pending(encoder):
        comparison_live(encoder, runs)
    else:
        draw_comparison(encoder, runs)


def _classifiers_pending(encoder: str) -> list:
    return [j for j in jobs().jobs(user()) if not j.is_final and j.cfg.model.encoder == encoder]


@st.fragment(run_every=3)
def comparison_live(encoder: str, runs: dict) -> None:
    draw_comparison(encoder, runs)
    if not _classifiers_pending(encoder):
        st.rerun()  # once more, without the timer


def draw_comparison(encoder: str, runs: dict) -> None:
    if pending := _classifiers_pending(encoder):
        st.info(t("ae_pending", n=len(pending)))
    done = [m for m in classifier_runs() if m["config"]["model"]["encoder"] == encoder]
    by_mode = {}
    for meta in done:  # the newest run of each mode
        by_mode.setdefault(meta["config"]["model"]["encoder_mode"], meta)
    if not by_mode:
        st.caption(t("ae_no_classifiers"))
        return
    rows = [{t("ae_mode"): t(f"ae_mode_{mode}"), t("ae_test_acc"): m["test"]["accuracy"],
             t("ae_macro_f1"): m["test"]["macro_f1"],
             t("ae_epochs"): len(m["history"]["epoch"])}
            for mode in MODES if (m := by_mode.get(mode))]  # fmt: skip
    left, right = st.columns([2, 3])
    left.dataframe(styled(pd.DataFrame(rows)), hide_index=True, placeholder=DASH)
    left.caption(t("ae_paper_acc", acc=num(seed001.CLASSIFIER_ACCURACY, 2)))
    histories = {mode: meta["history"] for mode, meta in by_mode.items()}
    right.plotly_chart(mode_curves(histories), key=f"ae_cmp_{encoder}_{len(done)}")
    pooling_table(runs)
    if (best := by_mode.get("finetune")) is not None:
        st.markdown(f"**{t('ae_confusion')}**")
        classes = [class_name(c) for c in best["classes"]]
        st.plotly_chart(confusion(best["test"]["confusion_matrix_normalized"], classes, True),
                        key=f"ae_confusion_{best['run_id']}")  # fmt: skip


def pooling_table(runs: dict) -> None:
    """Seed 001's appendix: the same three modes on encoders with and without pooling."""
    cells: dict = {}
    for meta in classifier_runs():
        ae = runs.get(meta["config"]["model"]["encoder"])
        if ae is None:
            continue
        pooling = ae["config"]["model"]["pooling"]
        cells.setdefault((pooling, meta["config"]["model"]["encoder_mode"]),
                         meta["test"]["accuracy"])  # fmt: skip
    if not any(p is False for p, _ in cells):
        st.caption(t("ae_pooling_hint"))
    rows = [{t("ae_pooling"): t("ae_yes") if p else t("ae_no"),
             **{t(f"ae_mode_{mode}"): cells.get((p, mode)) for mode in MODES}}
            for p in (True, False)]  # fmt: skip
    st.markdown(f"**{t('ae_pooling_compare')}**")
    st.dataframe(styled(pd.DataFrame(rows)), hide_index=True, placeholder=DASH)


def main() -> None:
    st.title(t("ae_title"))
    st.caption(t("ae_intro"))
    runs = {m["run_id"]: m for m in stored_runs("reconstruct")}
    tabs = st.tabs([t("ae_tab_train"), t("ae_tab_map"), t("ae_tab_tables"), t("ae_tab_cls")])
    with tabs[0]:
        train_section()
    with tabs[1]:
        latent_section(runs)
    with tabs[2]:
        sweep_section()
    with tabs[3]:
        classifier_section(runs)


main()
