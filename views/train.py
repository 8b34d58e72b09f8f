"""Train: set every option, start a background run, watch its curves live, reattach later."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core import UserError, models, presets, recipes
from core.config import TUNE_MODES, DataConfig, ModelConfig, RunConfig, TrainConfig, parse_sizes
from core.data import BUILTIN
from ui import datasets as photo_sets
from ui.charts import curves
from ui.i18n import t
from ui.state import jobs, restart_note, show_job, start, store, user

BATCH_SIZES = [16, 32, 64, 128, 256, 512, 1024]
LEARNING_RATES = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 4e-3, 1e-2, 3e-2, 1e-1, 1.0, 10.0, 1e4]
CUSTOM = "—"


def options_ui() -> RunConfig:
    """Every trainer option, each with a 'what this does' help; returns the RunConfig."""
    names = [CUSTOM, *presets.PRESETS]
    labels = {n: _preset_label(n) for n in names}
    preset = st.selectbox(t("tr_start_from"), names, format_func=labels.get,
                          help=t("tr_help_preset"))  # fmt: skip
    base = presets.get(preset).config if preset != CUSTOM else RunConfig()
    model_names = [e.name for e in models.list_models()]
    c1, c2, c3 = st.columns(3)
    with c1:
        name = st.selectbox(t("tr_model"), model_names, index=model_names.index(base.model.name),
                            help=t("tr_help_model"), key=f"{preset}_model")  # fmt: skip
        dataset = dataset_ui()
        photos = dataset not in BUILTIN
        if preset == CUSTOM:  # a backbone starts from its own recipe (core.recipes)
            base = recipes.with_recipe(base, name, dataset)
        # Widget keys per preset, model and kind of data: a change resets the form to them.
        k = f"{preset}_{name}_{'photos' if photos else 'builtin'}_"
        defaults = models.get(name).defaults
        epochs = st.number_input(t("tr_epochs"), 1, 200, base.train.epochs,
                                 help=t("tr_help_epochs"), key=k + "epochs")  # fmt: skip
        batch = st.select_slider(t("tr_batch"), BATCH_SIZES, base.train.batch_size,
                                 help=t("tr_help_batch"), key=k + "batch")  # fmt: skip
        lr = st.select_slider(t("tr_lr"), LEARNING_RATES, _nearest(base.train.lr),
                              format_func=lambda v: f"{v:g}", help=t("tr_help_lr"),
                              key=k + "lr")  # fmt: skip
    with c2:
        optimizer = st.selectbox(t("tr_optimizer"), ["adamw", "adam", "sgd"],
                                 index=["adamw", "adam", "sgd"].index(base.train.optimizer),
                                 help=t("tr_help_optimizer"), key=k + "opt")  # fmt: skip
        schedules = ["onecycle", "constant", "step", "cosine", "plateau"]
        labels = {s: t(f"tr_sched_{s}") for s in schedules}  # built in the run, not lazily
        schedule = st.selectbox(t("tr_schedule"), schedules,
                                index=schedules.index(base.train.schedule),
                                format_func=labels.get, help=t("tr_help_schedule"),
                                key=k + "sched")  # fmt: skip
        early = st.number_input(t("tr_early"), 0, 50, base.train.early_stopping,
                                help=t("tr_help_early"), key=k + "early")  # fmt: skip
        seed = st.number_input(t("tr_seed"), 0, 10_000, base.train.seed,
                               help=t("tr_help_seed"), key=k + "seed")  # fmt: skip
        smoothing = st.slider(t("tr_smoothing"), 0.0, 0.3, base.train.label_smoothing, 0.05,
                              help=t("tr_help_smoothing"), key=k + "ls")  # fmt: skip
    with c3:
        model_options = model_options_ui(defaults, k)
        l1 = st.number_input(t("tr_l1"), 0.0, 1.0, base.train.l1, format="%.0e",
                             step=1e-5, help=t("tr_help_l1"), key=k + "l1")  # fmt: skip
        l2 = st.number_input(t("tr_l2"), 0.0, 1.0, base.train.l2, format="%.0e",
                             step=1e-4, help=t("tr_help_l2"), key=k + "l2")  # fmt: skip
        jitter = st.slider(t("tr_jitter"), 0, 32 if photos else 4, base.train.jitter,
                           help=t("tr_help_jitter"), key=k + "jitter")  # fmt: skip
        hflip = st.checkbox(t("tr_hflip"), base.train.hflip, help=t("tr_help_hflip"),
                            key=k + "hflip")  # fmt: skip
        oversample = st.checkbox(t("tr_oversample"), base.train.oversample,
                                 help=t("tr_help_oversample"), key=k + "over")  # fmt: skip
    cfg = RunConfig(
        data=DataConfig(dataset=dataset),
        model=ModelConfig(name, **model_options),
        train=TrainConfig(
            epochs=int(epochs), batch_size=batch, lr=lr, optimizer=optimizer,
            schedule=schedule, early_stopping=int(early), seed=int(seed),
            label_smoothing=smoothing, l1=l1, l2=l2, jitter=jitter, hflip=hflip,
            oversample=oversample, weight_decay=base.train.weight_decay,
        ),
    )  # fmt: skip
    return recipes.sized_for(cfg)


def model_options_ui(defaults: dict, k: str) -> dict:
    """The options the picked model reads (dropout; hidden sizes; a backbone's mode and
    resolution), as ModelConfig fields."""
    options: dict = {}
    if "dropout" in defaults:
        options["dropout"] = st.slider(t("tr_dropout"), 0.0, 0.9, float(defaults["dropout"]),
                                       0.05, help=t("tr_help_dropout"), key=k + "drop")  # fmt: skip
    if "hidden" in defaults:
        hidden = st.text_input(t("tr_hidden"), ",".join(map(str, defaults["hidden"])),
                               help=t("tr_help_hidden"), key=k + "hidden")  # fmt: skip
        try:
            options["hidden"] = parse_sizes(hidden) if hidden.strip() else None
        except UserError:
            raise UserError(t("tr_bad_hidden")) from None
    if "tune" in defaults:
        labels = {m: t(f"tr_tune_{m}") for m in TUNE_MODES}
        options["tune"] = st.selectbox(t("tr_tune"), TUNE_MODES, format_func=labels.get,
                                       index=TUNE_MODES.index(defaults["tune"]),
                                       help=t("tr_help_tune"), key=k + "tune")  # fmt: skip
        auto = t("tr_auto")
        sides = [auto, 96, 128, 160, 192, 224, 256, 288, 320]
        side = st.selectbox(t("tr_resolution"), sides, help=t("tr_help_resolution"),
                            key=k + "res")  # fmt: skip
        options["resolution"] = None if side == auto else int(side)
    # A model default stays unset, as the command line leaves it: one run key for both.
    return {k: None if v == defaults.get(k) else v for k, v in options.items()}


def dataset_ui(key: str = "train_dataset") -> str:
    """The dataset picked: a built-in one, one of this visitor's uploaded zips, or a folder
    the teacher offers; its class balance, and an upload box for a new zip."""
    own = {**photo_sets.uploads(store().root, user()), **photo_sets.offered_folders()}
    names = {d: d for d in BUILTIN} | {path: shown for shown, path in own.items()}
    if st.session_state.get(key) not in names:  # an upload gone, a folder no longer offered
        st.session_state.pop(key, None)
    dataset = st.selectbox(t("tr_dataset"), list(names), format_func=names.get,
                           help=t("tr_help_dataset"), key=key)  # fmt: skip
    with st.expander(t("tr_photos"), expanded=dataset not in BUILTIN):
        st.caption(t("tr_photos_explain"))
        st.file_uploader(t("tr_upload"), type=["zip"], key="dataset_zip",
                         max_upload_size=photo_sets.MAX_ZIP_MB, help=t("tr_help_upload"),
                         on_change=_uploaded, args=(key,))  # fmt: skip
        if problem := st.session_state.get("dataset_zip_error"):
            st.error(problem)
        if dataset not in BUILTIN:
            balance_view(dataset)
    return dataset


def _uploaded(key: str) -> None:
    """The upload box changed (runs before the page): keep a usable zip and pick it."""
    st.session_state.pop("dataset_zip_error", None)
    file = st.session_state.get("dataset_zip")
    if file is None:
        return
    path = None
    try:  # a quota or a full disk refuses before anything is written
        path = photo_sets.save_upload(store().root, user(), file.name, file.getvalue())
        photo_sets.check(str(path))
    except UserError as e:
        if path is not None:
            photo_sets.forget_upload(path)
        st.session_state["dataset_zip_error"] = t("tr_bad_dataset", name=file.name, why=str(e))
    else:
        st.session_state[key] = str(path)


def balance_view(path: str) -> None:
    """Images per class and split of a photo dataset, and what was skipped."""
    try:
        info = photo_sets.check(path)
    except UserError as e:
        st.error(t("tr_bad_dataset", name=Path(path).name, why=str(e)))
        raise UserError(t("tr_pick_other")) from None
    st.caption(t("tr_balance", name=info.name, n=info.total, c=len(info.classes)))
    rows = {t(f"tr_split_{split}"): counts for split, counts in info.counts.items()}
    st.bar_chart(pd.DataFrame(rows, index=list(info.classes)), horizontal=True,
                 height=90 + 24 * min(len(info.classes), 30), x_label=t("tr_images"),
                 y_label="")  # fmt: skip
    if info.skipped:
        st.caption(t("tr_skipped", n=info.skipped))
    if info.ratio > 1.5:
        st.warning(t("tr_imbalanced", ratio=f"{info.ratio:.1f}"))


def _preset_label(name: str) -> str:
    return t("tr_custom") if name == CUSTOM else f"{name} — {presets.get(name).summary}"


def _nearest(lr: float) -> float:
    return min(LEARNING_RATES, key=lambda v: abs(v - lr))


def current_job():
    job_id = st.session_state.get("job") or st.query_params.get("job")
    return jobs().get(job_id, user()) if job_id else None


def stored_view(run_id: str) -> None:
    meta = store().meta(run_id)
    if meta is None:
        return
    st.success(t("tr_in_store", acc=f"{meta['test']['accuracy']:.4f}"))
    st.plotly_chart(curves(meta["history"], overfit=meta.get("overfitting_epoch")),
                    key="stored_curves")  # fmt: skip


def job_view(job_id: str) -> None:
    """A job's state, progress and curves, from its snapshot."""
    job = jobs().get(job_id, user())
    if job is None:
        st.warning(t("tr_job_gone"))
        return
    snap = job.snapshot()
    state, progress = snap["state"], snap["progress"]
    if state == "queued":
        st.info(t("tr_queued", place=jobs().position(job_id)))
    elif state == "waiting":
        st.info(t("tr_waiting"))
    elif state == "running" and not progress:
        st.info(t("tr_starting"))
    elif state == "running":
        done = ((progress["epoch"] - 1) * progress["batches"] + progress["batch"]) / (
            progress["epochs"] * progress["batches"])  # fmt: skip
        st.progress(min(done, 1.0), text=t(
            "tr_progress", epoch=progress["epoch"], epochs=progress["epochs"],
            speed=f"{progress['images_per_second']:,.0f}", eta=f"{progress['eta']:.0f}",
            loss=f"{progress['loss']:.3f}"))  # fmt: skip
    elif state == "done":
        st.success(t("tr_done_hit" if snap["cache_hit"] else "tr_done"))
    elif state == "diverged":
        st.error(t("tr_diverged", why=snap["message"]))
    elif state in ("stopped", "failed"):
        st.warning(t(f"tr_{state}", why=snap["message"]))
    restart_note(snap)
    if state not in ("diverged", "failed") or snap["history"]:
        # Drawn from the start (empty axes while queued): the chart is in place, and its
        # first points appear in the same spot as soon as the run reports them.
        st.plotly_chart(curves(snap["history"], progress.get("batches")), key=f"live_{job_id}")


def my_jobs_ui() -> None:
    mine = jobs().jobs(user())
    if not mine:
        return
    with st.expander(t("tr_my_runs", n=len(mine))):
        for job in mine:
            c1, c2 = st.columns([4, 1])
            c1.write(f"`{job.id}` · {job.cfg.model.name} · {t('tr_state_' + job.state)}")
            if c2.button(t("tr_show"), key=f"show_{job.id}"):
                st.session_state.job = job.id
                st.query_params["job"] = job.id
                st.rerun()


def main() -> None:
    st.title(t("tr_title"))
    st.caption(t("tr_intro"))
    try:
        cfg = options_ui()
    except UserError as e:
        st.error(str(e))
        return
    c1, c2, _ = st.columns([1, 1, 4])
    job = current_job()
    running = job is not None and not job.is_final
    if c1.button(t("tr_start"), type="primary", disabled=running):
        try:
            start(cfg)
        except UserError as e:
            st.error(str(e))
        job = current_job()
        running = job is not None and not job.is_final
    if running and c2.button(t("tr_stop")):
        jobs().stop(job.id, user())
    if st.session_state.get("stored") and job is None:
        stored_view(st.session_state.stored)
    elif job is not None:
        show_job(job, job_view)
    else:  # the empty chart: its curves will grow here (and the chart code is loaded now)
        st.caption(t("tr_curves_here"))
        st.plotly_chart(curves({}), key="empty_curves")
    my_jobs_ui()


main()
