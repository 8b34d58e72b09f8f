"""Experiments: seed 003's ablations (take a part of the network away, retrain, compare) and
seeds 001/002's sweeps (cross values of any setting). Every run is an ordinary job of the
server's queue and lands in the store, so a refresh, another page or a second visit finds
the results; a diverged run is shown as diverged, with the epoch it happened."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import UserError, schema, sweep
from core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from ui.charts import error_bars, parallel, variant_curves
from ui.i18n import lang, num, styled, t
from ui.state import classroom, jobs, user
from ui.state import dataset as load_dataset
from ui.text import DASH
from ui.widgets import field_widget

SWEEP_MODELS = ("cnn_small", "mlp", "cnn_bn", "cnn_stages", "fast")
SWEEP_FIELDS = ("hidden", "lr", "dropout", "batch_size", "epochs", "optimizer", "schedule",
                "width", "stages", "weight_decay", "label_smoothing", "jitter", "seed")  # fmt: skip
GRID_ROWS = 3
TRAIN_IMAGES = (5000, 10_000, 20_000)  # or t("ex_all"): the whole training split
SEED002 = {"model": "cnn_small", "rows": [("hidden", "100|50,50|3x75")], "epochs": 5}


def field_label(name: str) -> str:
    """A setting's name as the page's language says it (core.schema's label)."""
    return schema.field(name).label(lang())


def image_choices(dataset: str) -> tuple[str, ...]:
    """The training-set sizes worth offering for ``dataset``: those below its training
    split (digits has 1,797 images in all, so none of 5,000 and more), then "all"."""
    available = len(load_dataset(DataConfig(dataset)).y_train)
    return (*(num(n) for n in TRAIN_IMAGES if n < available), t("ex_all"))


def settings(prefix: str, epochs: int) -> tuple[DataConfig, TrainConfig]:
    """The data and training settings every run of one experiment shares."""
    c = st.columns(5)
    data = c[0].selectbox(t("tr_dataset"), ["fashion-mnist", "digits"], key=f"{prefix}_data")
    size = c[1].selectbox(t("ex_size"), [28, 64], key=f"{prefix}_size", help=t("ex_size_help"))
    # Plain strings ("5,000", "all"): what the widget shows is its value (AppTest compares
    # them that way).
    choices = image_choices(data)
    if st.session_state.get(f"{prefix}_limit") not in choices:  # another dataset's size
        st.session_state.pop(f"{prefix}_limit", None)
    limit = c[2].selectbox(t("ex_images"), choices, key=f"{prefix}_limit",
                           help=t("ex_images_help"))  # fmt: skip
    st.session_state.setdefault(f"{prefix}_epochs", epochs)  # a preset button may set it
    f = schema.FIELDS["epochs"]  # the session state holds its value: no value= here
    epochs = c[3].number_input(f.label(lang()), 1, 50, key=f"{prefix}_epochs",
                               help=f.help(lang()))  # fmt: skip
    lr = field_widget(schema.FIELDS["lr"], TrainConfig.lr, key=f"{prefix}_lr", where=c[4])
    image_size = None if size == 28 else size
    limit = int("".join(c for c in limit if c.isdigit())) if limit != t("ex_all") else None
    return (DataConfig(data, train_limit=limit, image_size=image_size),
            TrainConfig(epochs=int(epochs), lr=lr))  # fmt: skip


def submit(variants: list[sweep.Variant]) -> None:
    """Queue every variant that is neither stored nor already queued by this visitor."""
    # One submission: it counts once against the visitor's cap. No maps: eleven would delay
    # the runs.
    try:
        asked = jobs().request([v.cfg for v in variants], user(), map_after=False)
        classroom().hand_in(user(), asked.run_ids)
    except UserError as e:
        st.error(str(e))
        return
    queued = len(asked.queued)
    st.toast(t("ex_submitted", n=queued, stored=len(variants) - queued))


def collect(variants: list[sweep.Variant]) -> list[dict]:
    """Each variant's state: stored (with its test metrics), this visitor's job for it (live
    history; diverged with its epoch), or not run."""
    rows = []
    for v, run in zip(variants, jobs().states([v.cfg for v in variants], user()), strict=True):
        row = {"variant": v, "run_id": run.run_id, "history": {}, "test": None, "epoch": None}
        if (meta := run.meta) is not None:
            row |= {"state": "done", "history": meta["history"], "test": meta["test"],
                    "seconds": meta["wall_seconds"]}  # fmt: skip
        elif run.job is not None:
            snap = run.job.snapshot()
            row |= {"state": snap["state"], "history": snap["history"],
                    "epoch": snap["progress"].get("diverged_epoch", snap["progress"].get("epoch")),
                    "message": snap["message"], "job": run.job.id}  # fmt: skip
        else:
            row["state"] = "none"
        rows.append(row)
    return rows


def state_text(row: dict) -> str:
    state = row["state"]
    if state == "none":
        return t("ex_state_none")
    if state == "queued":
        return t("tr_queued", place=jobs().position(row["job"]))
    if state == "running" and row["epoch"]:
        return t("ex_running", epoch=row["epoch"])
    if state == "diverged":
        return t("ex_diverged_at", epoch=row["epoch"] or 1)
    return t("tr_state_" + state)


def summary_table(rows: list[dict], label) -> None:
    params = sorted({k for r in rows for k in r["variant"].params}) if label is None else []
    records = []
    for r in rows:
        test = r["test"] or {}
        record = {t("ex_variant"): name_of(r, label)}
        for p in params:
            record[field_label(p)] = schema.show(r["variant"].params.get(p, ""))
        record |= {
            t("ex_state"): state_text(r),
            t("ex_top1"): 1 - test["accuracy"] if "accuracy" in test else None,
            t("ex_top5"): 1 - test["top5_accuracy"] if "top5_accuracy" in test else None,
            t("ex_accuracy"): test.get("accuracy"),
            field_label("epochs"): len(r["history"].get("epoch", [])) or None,
        }
        records.append(record)
    st.dataframe(styled(pd.DataFrame(records)), hide_index=True, placeholder=DASH, width="stretch",
                 height=35 * (len(records) + 1) + 3)  # fmt: skip


def name_of(row: dict, label) -> str:
    """A variant as the page's language names it: ``label``'s words (an ablation), or its
    grid values with the settings' names ("Capas densas ocultas=50,50")."""
    if label:
        return label(row["variant"])
    return " ".join(f"{field_label(k)}={schema.show(v)}" for k, v in row["variant"].params.items())


PANELS = (
    ("val_accuracy", "ex_top1"),
    ("val_top5_accuracy", "ex_top5"),
    ("val_loss", "ex_val_loss"),
)


def charts_ui(rows: list[dict], key: str, label) -> None:
    """Validation curves per epoch, test errors per variant and, for a sweep, the parallel
    coordinates of its settings against test accuracy (ui.charts draws them)."""
    if drawn := [r for r in rows if r["history"].get("epoch")]:
        series = [(name_of(r, label), r["history"], r["state"] == "diverged") for r in drawn]
        panels = [(k, t(title)) for k, title in PANELS]
        st.plotly_chart(variant_curves(series, panels), key=f"{key}_curves")
    if shown := [r for r in rows if r["test"] or r["state"] == "diverged"]:
        top1 = [1 - r["test"]["accuracy"] if r["test"] else None for r in shown]
        top5 = [1 - r["test"]["top5_accuracy"] if r["test"] else None for r in shown]
        diverged = [name_of(r, label) for r in shown if r["state"] == "diverged"]
        st.plotly_chart(error_bars([name_of(r, label) for r in shown], top1, top5, diverged),
                        key=f"{key}_bars")  # fmt: skip
    done = [r for r in rows if r["test"] and "accuracy" in r["test"]]
    params = sorted({k for r in rows for k in r["variant"].params})
    if label is None and len(done) >= 2 and params:
        axes = {field_label(p): _axis([r["variant"].params.get(p) for r in done]) for p in params}
        log = {field_label(p) for p in ("lr", "weight_decay")}
        accuracy = [r["test"]["accuracy"] for r in done]
        st.plotly_chart(parallel(axes, log, accuracy), key=f"{key}_parallel")


def _axis(values: list) -> list:
    """A setting's values for an axis: numbers as they are, anything else (hidden layers,
    optimizers) as the sweep writes them."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return values
    return [schema.show(v) for v in values]


PENDING = ("queued", "waiting", "running")


def results(variants: list[sweep.Variant], key: str, label=None) -> None:
    """The experiment's results; redrawn every 2 s only while one of its runs is pending
    (reading every run's metadata has a cost a class of 30 would multiply)."""
    rows = collect(variants)
    if any(r["state"] in PENDING for r in rows):
        live_results(variants, key, label)
    else:
        draw(rows, key, label)


@st.fragment(run_every=2)
def live_results(variants: list[sweep.Variant], key: str, label) -> None:
    """Redrawn from the store and the jobs; the page itself never trains. When the last run
    ends, one full rerun draws the results once more without the timer."""
    rows = collect(variants)
    draw(rows, key, label)
    if not any(r["state"] in PENDING for r in rows):
        st.rerun()


def draw(rows: list[dict], key: str, label) -> None:
    if all(r["state"] == "none" for r in rows):
        st.caption(t("ex_not_run"))
        return
    summary_table(rows, label)
    charts_ui(rows, key, label)
    for r in rows:
        if r["state"] == "diverged":
            name = name_of(r, label)
            st.warning(t("ex_diverged_line", name=name, epoch=r["epoch"] or 1,
                         reason=r.get("message", "")))  # fmt: skip


# -- seed 003's ablations --------------------------------------------------------------------
def ablation_label(v: sweep.Variant) -> str:
    """A variant's name in the page's language, from what it changes."""
    p = v.params
    if not p:
        return t("ex_full")
    if "skip" in p:
        return t("ex_no_stage", k=p["skip"][0])
    if "no_relu" in p and "no_pool" in p:
        return t("ex_combo", first=p["no_relu"][0], last=p["no_relu"][-1], k=p["no_pool"][0])
    if "no_relu" in p:
        return t("ex_no_relu", k=p["no_relu"][0])
    return t("ex_no_pool", k=p["no_pool"][0])


def ablation_tab() -> None:
    st.caption(t("ex_ablate_intro"))
    data, train = settings("ab", epochs=3)
    widths = st.text_input(t("ex_widths"), "16,32,64,128", key="ab_widths",
                           help=t("ex_widths_help"))  # fmt: skip
    try:
        stages = sweep.parse_value("stages", widths)
        base = RunConfig(data, ModelConfig("cnn_stages", stages=stages), train)
        variants = sweep.ablations(base)
    except UserError as e:
        st.error(str(e))
        return
    names = [v.name for v in variants]
    labels = {v.name: ablation_label(v) for v in variants}
    chosen = st.multiselect(t("ex_variants"), names, default=names, key="ab_chosen",
                            format_func=labels.get)  # fmt: skip
    variants = [v for v in variants if v.name in chosen]
    if st.button(t("ex_run", n=len(variants)), type="primary", key="ab_run",
                 disabled=not variants):  # fmt: skip
        submit(variants)
    st.caption(t("ex_seed003"))
    results(variants, "ab", ablation_label)


# -- sweeps ----------------------------------------------------------------------------------
def seed002_preset() -> None:
    """Button callback: seed 002's sweep over the hidden dense layers, in the widgets."""
    st.session_state["sw_model"] = SEED002["model"]
    st.session_state["sw_epochs"] = SEED002["epochs"]
    st.session_state["sw_limit"] = t("ex_all")  # seed 002 trained on the whole training set
    for i in range(GRID_ROWS):
        field, values = SEED002["rows"][i] if i < len(SEED002["rows"]) else ("—", "")
        st.session_state[f"sw_field_{i}"] = field_label(field) if field != "—" else "—"
        st.session_state[f"sw_values_{i}"] = values


def sweep_tab() -> None:
    st.caption(t("ex_sweep_intro"))
    for key, value in (("sw_model", "cnn_small"), ("sw_field_0", field_label("hidden")),
                       ("sw_values_0", "100|50,50|3x75")):  # fmt: skip
        st.session_state.setdefault(key, value)  # defaults here: the preset button sets them
    c = st.columns([2, 3])
    model = c[0].selectbox(t("tr_model"), SWEEP_MODELS, key="sw_model")
    c[1].button(t("ex_seed002"), key="sw_seed002", on_click=seed002_preset,
                help=t("ex_seed002_help"))  # fmt: skip
    data, train = settings("sw", epochs=SEED002["epochs"])
    specs = []
    for i in range(GRID_ROWS):
        left, right = st.columns([1, 3])
        # The options are the labels people read (as AppTest compares them), mapped back.
        fields = {"—": "—"} | {field_label(f): f for f in SWEEP_FIELDS}
        if st.session_state.get(f"sw_field_{i}") not in fields:  # the other language's label
            st.session_state.pop(f"sw_field_{i}", None)
        field = fields[left.selectbox(t("ex_field"), list(fields), key=f"sw_field_{i}")]
        values = right.text_input(t("ex_values"), key=f"sw_values_{i}", placeholder="0.01|0.001",
                                  help=t("ex_values_help"), disabled=field == "—")  # fmt: skip
        if field != "—" and values.strip():
            specs.append(f"{field}={values}")
    try:
        variants = sweep.grid(RunConfig(data, ModelConfig(model), train), sweep.parse_grid(specs))
    except UserError as e:
        st.error(str(e))
        return
    if st.button(t("ex_run", n=len(variants)), type="primary", key="sw_run"):
        submit(variants)
    results(variants, "sw")


def main() -> None:
    st.title(t("ex_title"))
    st.write(t("ex_intro"))
    ablate, grid = st.tabs([t("ex_tab_ablate"), t("ex_tab_sweep")])
    with ablate:
        ablation_tab()
    with grid:
        sweep_tab()


main()
