"""Train: set every option, start a background run, watch its curves live, reattach later."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import UserError, models, presets, recipes, schema, tasks
from core.assignments import Assignment
from core.config import ModelConfig, RunConfig, from_dict
from core.data import BUILTIN
from core.data import uploads as photo_sets
from core.embed import kept_frames, sample
from core.schema import FIELDS
from ui.charts import class_map, counts, curves, moving_map
from ui.i18n import lang, num, pct, preset_summary, rate, renamed_folders, t
from ui.job_panel import show_job, start
from ui.runs import choose, data_of, name_ui
from ui.state import LOAD, classroom, dataset, dataset_names, jobs, store, user
from ui.text import plain
from ui.widgets import BAD, field_widget, spoken_select

CUSTOM = "—"
PRESET, BASE, FORM = "tr_preset", "tr_base", "tr_form"  # session keys of the form's state


def _base() -> RunConfig:
    """The config the form's widgets start from: a preset's, a loaded run's, or the
    default model with its recipe."""
    if BASE not in st.session_state:
        st.session_state[BASE] = recipes.with_recipe(RunConfig(), RunConfig().model.name,
                                                     RunConfig().data.dataset)  # fmt: skip
    return st.session_state[BASE]


def _reset(base: RunConfig) -> None:
    """Start the form again from ``base``: every widget gets a new key, so its value is
    ``base``'s and not what it held before."""
    st.session_state[BASE] = base
    st.session_state[FORM] = st.session_state.get(FORM, 0) + 1


def load_form(cfg: RunConfig) -> None:
    """Show ``cfg`` in the form (Home's Run, a reattached job, a run's Show): its preset
    when it is one, else "my own settings" holding its values."""
    st.session_state[PRESET] = next((n for n, p in presets.PRESETS.items() if p.config == cfg),
                                    CUSTOM)  # fmt: skip
    st.session_state["train_dataset"] = cfg.data.dataset
    _reset(cfg)


def _preset_picked() -> None:
    name = st.session_state[PRESET]
    if name != CUSTOM:
        _reset(presets.get(name).config)
    else:
        base = RunConfig(data=_base().data)
        _reset(recipes.with_recipe(base, base.model.name, base.data.dataset))


def _model_picked(key: str) -> None:
    """Another model: its own options, and its recipe when the form is not a preset's."""
    base, name = _base(), st.session_state[key]
    base = replace(base, model=ModelConfig(name))
    if st.session_state.get(PRESET, CUSTOM) == CUSTOM:
        base = recipes.with_recipe(base, name, base.data.dataset)
    _reset(base)


# The schema's fields the form shows, per column, after the model and dataset pickers (c1)
# and before the model's own options (c3); the ends its sliders stop at, when not the schema's.
COLUMNS = (("epochs", "batch_size", "lr"),
           ("optimizer", "schedule", "early_stopping", "seed", "label_smoothing"),
           ("l1", "l2", "jitter", "hflip", "oversample"))  # fmt: skip
MODEL_OPTIONS = ("dropout", "hidden", "tune", "resolution")  # those the form offers, in order
HIGH = {"label_smoothing": 0.3, "dropout": 0.9}


def options_ui() -> RunConfig | None:
    """Every trainer option, each with a 'what this does' help; returns the RunConfig (None
    while a field holds text it cannot read: that field says why)."""
    names = [CUSTOM, *presets.PRESETS]
    labels = {n: _preset_label(n) for n in names}
    st.selectbox(t("tr_start_from"), names, format_func=labels.get, key=PRESET,
                 help=t("tr_help_preset"), on_change=_preset_picked)  # fmt: skip
    base = _base()
    model_names = [e.name for e in models.list_models()]
    c1, c2, c3 = st.columns(3)
    with c1:
        form = st.session_state.get(FORM, 0)
        name = st.selectbox(t("tr_model"), model_names, index=model_names.index(base.model.name),
                            help=t("tr_help_model"), key=f"f{form}_model",
                            on_change=_model_picked, args=(f"f{form}_model",))  # fmt: skip
        dataset = dataset_ui()
        photos = dataset not in BUILTIN
        # Widget keys per form and kind of data: a new form or dataset kind resets them.
        k = f"f{form}_{'photos' if photos else 'builtin'}_"
        if st.session_state.get("tr_kind") != k:
            st.session_state["tr_kind"] = k
            if st.session_state.get(PRESET, CUSTOM) == CUSTOM:  # photos get their shift
                base = st.session_state[BASE] = recipes.with_recipe(base, name, dataset)
    high = HIGH | {"jitter": 32 if photos else 4}
    train = {}
    for column, fields in zip((c1, c2, c3), COLUMNS, strict=True):
        with column:
            model_options = model_options_ui(name, base.model, k) if column is c3 else {}
            for f in map(FIELDS.get, fields):
                value = getattr(base.train, f.name)
                train[f.name] = field_widget(f, value, k + f.name, high.get(f.name),
                                             slider=f.name == "jitter")  # fmt: skip
    if BAD in (*model_options.values(), *train.values()):
        return None  # a field said what is wrong, under itself; Start waits for a fix
    # Only the fields the form shows change: a loaded run keeps the rest (momentum, ...).
    cfg = replace(base, data=replace(base.data, dataset=dataset),
                  model=replace(base.model, name=name, **model_options),
                  train=replace(base.train, **train))  # fmt: skip
    return recipes.sized_for(cfg)


ASSIGNMENT = "tr_assignment"  # session and URL key of the picked assignment
CHANGED = "tr_assignment_changed"  # session: the assignment went away in this run


def assignment_picker() -> Assignment | None:
    """The assignment this student works on, when the teacher set any (a link may name one:
    ``?assignment=ID``); None for free practice. One the teacher has since removed, or a
    link's unknown one, is said in one line, and the form is free practice."""
    offered = {a.id: a for a in classroom().assignments()}
    asked = st.query_params.get("assignment")
    if ASSIGNMENT not in st.session_state and asked:
        st.session_state[ASSIGNMENT] = asked
    kept = st.session_state.get(ASSIGNMENT)
    if kept and kept not in offered:
        st.warning(t("tr_assignment_gone", id=plain(kept)))
        st.session_state[ASSIGNMENT] = ""
        st.session_state[CHANGED] = True  # a Start pressed meanwhile was for that assignment
    if not offered:
        st.query_params.pop("assignment", None)
        return None
    titles = {"": t("tr_free_practice")} | {i: a.text("title", lang()) for i, a in offered.items()}
    picked = spoken_select(st, t("tr_assignment"), list(titles), titles, key=ASSIGNMENT,
                           help=t("tr_help_assignment"))  # fmt: skip
    if picked:
        st.query_params["assignment"] = picked
    else:
        st.query_params.pop("assignment", None)
    return offered.get(picked)


def assignment_form(task: Assignment) -> RunConfig | None:
    """The assignment's brief, the fields the student may change, and the fixed ones; the
    config is the assignment's with only the free fields taken from the widgets (whatever
    the browser sends, the fixed fields are the teacher's)."""
    with st.container(border=True):
        st.markdown(f"**{plain(task.text('title', lang()))}**")
        if brief := task.text("brief", lang()):
            st.markdown(plain(brief))
        if hand_in := task.text("hand_in", lang()):
            st.markdown(t("tr_hand_in", what=plain(hand_in)))
    k = f"as_{task.id}_"
    choices = task.model_choices()
    left, right = st.columns(2)
    with left:
        st.markdown(f"##### {t('tr_yours')}")
        name = task.config.model.name
        if len(choices) > 1:
            name = st.selectbox(t("tr_model"), choices, key=k + "model", help=t("tr_help_model"))
        cfg = schema.with_value(task.config, FIELDS["name"], name)
        defaults, bad = models.get(name).options, False
        free = [f for f in task.free_fields(name) if f.name != "name"]
        for f in free:
            start = schema.value(task.config, f)
            if start is None and f.section == "model" and f.kind != "stages":
                start = defaults.get(f.name)
            value = field_widget(f, start, k + f.name, HIGH.get(f.name))
            if value is not BAD:
                try:
                    f.check(value)
                except UserError:  # said under the box, in the page's language
                    st.error(t("tr_out_of_range", field=f.label(lang())))
                    value = BAD
            bad = bad or value is BAD
            if f.section == "model" and value == defaults.get(f.name):
                value = None  # the model's default stays unset: one run key with the CLI's
            if value is not BAD:
                cfg = schema.with_value(cfg, f, value)
        if not free and len(choices) == 1:
            st.caption(t("tr_nothing_free"))
    try:
        cfg = task.enforce(cfg)
    except UserError as e:  # a rule that ties two fields (stage numbers beyond the stages)
        with left:
            st.error(str(e))
        cfg, bad = task.config, True
    with right:
        st.markdown(f"##### :material/lock: {t('tr_locked')}")
        rows = [(f.label(lang()), setting(f, v)) for f, v in task.locked(cfg)]
        st.dataframe(pd.DataFrame(rows, columns=[t("tr_setting"), t("tr_value")]),
                     hide_index=True, height="content")  # fmt: skip
    return None if bad else cfg


def setting(f, value) -> str:
    """A locked setting's value as the page's language writes it."""
    if value is None:
        return t("tr_all_images" if f.name == "train_limit" else "tr_default_value")
    if f.kind == "bool":
        return t("lib_yes" if value else "lib_no")
    if f.kind == "choice":
        return f.choice_label(value, lang())
    if f.kind == "float":
        return rate(value)  # 0.001, 0.1, 0: as short as the number, in the page's language
    if f.kind == "int":
        return num(value)
    return schema.show(value)


def model_options_ui(name: str, model: ModelConfig, k: str) -> dict:
    """The options the picked model reads that the form offers (dropout; hidden sizes; a
    backbone's mode and resolution), as ModelConfig fields, starting from ``model``'s (else
    the registry's)."""
    defaults = models.get(name).options
    own = {f.name for f in schema.model_fields(name)}
    options = {}
    for f in (FIELDS[n] for n in MODEL_OPTIONS if n in own):
        start = getattr(model, f.name)
        if start is None and f.name != "resolution":  # resolution: None is "automatic"
            start = defaults[f.name]
        options[f.name] = field_widget(f, start, k + f.name, HIGH.get(f.name))
    # A model default stays unset, as the command line leaves it: one run key for both.
    return {f: None if v == defaults.get(f) else v for f, v in options.items()}


def dataset_ui(key: str = "train_dataset") -> str:
    """The dataset picked: a built-in one, one of this visitor's uploaded zips, or a folder
    the teacher offers; its class balance, and an upload box for a new zip."""
    names = dataset_names(key)
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
    except (UserError, OSError) as e:  # OSError: the disk filled while saving
        if path is not None:
            photo_sets.forget_upload(path)
        why = str(e) if isinstance(e, UserError) else (e.strerror or str(e))
        st.session_state["dataset_zip_error"] = t("tr_bad_dataset", name=plain(file.name),
                                                  why=plain(why))  # fmt: skip
    else:
        st.session_state[key] = str(path)


def balance_view(path: str) -> None:
    """Images per class and split of a photo dataset, and what was skipped."""
    try:
        info = photo_sets.check(path)
    except UserError as e:
        st.error(t("tr_bad_dataset", name=plain(Path(path).name), why=plain(str(e))))
        if path in photo_sets.uploads(store().root, user()).values():  # gone from the list
            photo_sets.forget_upload(Path(path))
        raise UserError(t("tr_pick_other")) from None
    st.caption(t("tr_balance", name=info.name, n=info.total, c=len(info.classes)))
    rows = {t(f"tr_split_{split}"): counts for split, counts in info.counts.items()}
    st.plotly_chart(counts(pd.DataFrame(rows, index=list(info.classes)), t("tr_images"),
                           height=90 + 24 * min(len(info.classes), 30)),
                    key=f"balance_{info.name}")  # fmt: skip
    if info.skipped:
        st.caption(t("tr_skipped", n=info.skipped))
    if info.renamed:
        st.caption(renamed_folders(info.renamed))
    if info.ratio > 1.5:
        st.warning(t("tr_imbalanced", ratio=f"{info.ratio:.1f}"))


def _preset_label(name: str) -> str:
    return t("tr_custom") if name == CUSTOM else f"{name} — {preset_summary(name)}"


def stored_run() -> str | None:
    """The stored run this page shows (this session's, else the URL's), if it exists."""
    run_id = st.session_state.get("stored") or st.query_params.get("stored")
    try:
        ok = run_id is not None and store().meta(run_id) is not None
    except ValueError:  # not a run id
        ok = False
    st.session_state["stored"] = run_id if ok else None
    return run_id if ok else None


def current_job():
    job_id = st.session_state.get("job") or st.query_params.get("job")
    return jobs().get(job_id, user()) if job_id else None


def finished_ui(run_id: str) -> None:
    """What a finished run scored, and the way to its mistakes; it becomes the run every
    page opens on."""
    meta = store().meta(run_id)
    if meta is None:
        return
    choose(run_id)
    test = meta["test"]
    score = (t("tr_score_mse", mse=num(test["mse"], 4)) if "mse" in test else
             t("tr_score", acc=pct(test["accuracy"]), f1=num(test["macro_f1"], 3)))  # fmt: skip
    st.success(score)
    if "accuracy" in test:
        st.page_link("views/evaluate.py", label=t("tr_open_evaluate"), icon=":material/fact_check:")
    name_ui(run_id, "tr_name", t("tr_name"), t("tr_help_name"))
    if "accuracy" in test:
        replay_ui(meta)


def stored_view(run_id: str) -> None:
    meta = store().meta(run_id)
    if meta is None:
        return
    st.info(t("tr_in_store"))
    finished_ui(run_id)
    st.plotly_chart(curves(meta["history"], overfit=meta.get("overfitting_epoch")),
                    key="stored_curves")  # fmt: skip


LIVE_MAP = "tr_live_map"  # the session's opt-in to the moving map


def live_map_aside(classes: list[str]):
    """What a live job shows beside its curves when it maps its features: the test images'
    map after the last epoch (a new frame each epoch)."""

    def aside(column, snap: dict) -> None:
        preview = snap["preview"]
        if "frame" not in preview:
            column.caption(t("tr_map_soon"))
            return
        fig, _ = class_map(preview["frame"], preview["labels"], classes, "live-map",
                           trace=go.Scatter, height=420, select=False, size=5)  # fmt: skip
        column.plotly_chart(fig, key="live_map")
        column.caption(t("tr_map_epoch", epoch=preview["epoch"], n=num(len(preview["labels"]))))

    return aside


def replay_ui(meta: dict) -> None:
    """A finished run trained with the moving map: its epochs, replayed."""
    frames = kept_frames(store(), meta)
    if frames is None:
        return
    index = sample(meta["dataset"]["sizes"]["test"], frames.shape[1])
    labels = data_of(meta).y_test[index]
    st.subheader(t("tr_map_replay"))
    st.caption(t("tr_map_replay_help", n=num(len(index))))
    st.plotly_chart(moving_map(frames, labels, list(meta["classes"])), key="replay_map")


def done_ui(snap: dict) -> None:
    st.info(t("tr_done_hit" if snap["cache_hit"] else "tr_done"))
    finished_ui(snap["run_id"])


def my_jobs_ui() -> None:
    mine = jobs().jobs(user())
    if not mine:
        return
    with st.expander(t("tr_my_runs", n=len(mine))):
        for job in mine:
            c1, c2 = st.columns([4, 1])
            c1.write(f"`{job.id}` · {job.cfg.model.name} · {t('tr_state_' + job.state)}")
            c2.button(t("tr_show"), key=f"show_{job.id}", on_click=show, args=(job,))


def show(job) -> None:
    """Make ``job`` the page's: its curves, and its settings in the form."""
    st.session_state.job = job.id
    st.session_state.pop("stored", None)
    st.query_params["job"] = job.id
    load_form(job.cfg)


def main() -> None:
    st.title(t("tr_title"))
    st.caption(t("tr_intro"))
    if (loaded := st.session_state.pop(LOAD, None)) is not None:  # Home's Run
        load_form(loaded)
    job = current_job()
    if job is not None and BASE not in st.session_state:  # a refresh, or a link: its form
        show(job)
    elif job is not None:  # back from another page (which dropped it): a refresh finds it
        st.query_params["job"] = job.id
    elif (run_id := stored_run()) is not None:  # a stored run shown: the same, for it
        st.query_params["stored"] = run_id
        if BASE not in st.session_state:
            load_form(from_dict(store().meta(run_id)["config"]))
    # The run's buttons and curves come first, the settings below: after Start the curves
    # are in view without scrolling.
    top, settings = st.container(), st.container()
    with settings:
        task = assignment_picker()
        st.subheader(t("tr_settings"))
        try:
            cfg = assignment_form(task) if task else options_ui()
        except UserError as e:
            st.error(str(e))
            cfg = None
    with top:
        running = job is not None and not job.is_final
        c1, c2, c3 = st.columns([1, 1, 4], vertical_alignment="center")
        c3.checkbox(t("tr_live_map"), key=LIVE_MAP, help=t("tr_live_map_help"))
        pressed = c1.button(t("tr_start"), type="primary", disabled=running or cfg is None)
        if pressed and st.session_state.pop(CHANGED, False):
            st.warning(t("tr_check_again"))  # the form is not the one the student saw
        elif pressed:
            try:
                start(cfg, assignment=task.id if task else "",
                      live_map=st.session_state.get(LIVE_MAP, False))  # fmt: skip
            except UserError as e:
                st.error(str(e))
            else:
                st.rerun()  # drawn again with Start disabled while the run is live
        st.session_state.pop(CHANGED, None)  # this run's news only
        if running and c2.button(t("tr_stop")):
            jobs().stop(job.id, user())
        if st.session_state.get("stored") and job is None:
            stored_view(st.session_state.stored)
        elif job is not None:
            aside = None
            if job.live_map and tasks.of(job.cfg.model.name).has_accuracy:
                aside = live_map_aside(list(dataset(job.cfg.data).classes))
            show_job(job, "live", done_ui, aside=aside)
        else:
            st.caption(t("tr_curves_here"))
    if job is None and not st.session_state.get("stored"):  # the chart code loads meanwhile
        st.plotly_chart(curves({}), key="empty_curves")
    my_jobs_ui()


main()
