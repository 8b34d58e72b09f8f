"""Evaluate, Embeddings and Compare as a reader sees them (streamlit.testing): the cell
gallery's pages, every class named on the confusion matrix, per-class accuracy in order,
mistakes as rings or alone on the map, tables written as numbers are written (no "None",
whole numbers without decimals), run names, and no English in the Spanish pages."""

from __future__ import annotations

import base64
import dataclasses
import json
import re

import numpy as np
import pytest
import streamlit as st
from conftest import ROOT, TINY, fashion_available, needs_fashion
from streamlit import dataframe_util
from streamlit.testing.v1 import AppTest

from core import metrics
from core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from core.runs import train_or_load
from core.store import Store

# A Fashion-MNIST run small enough for a test (about 2 s) whose 10,000 test images fill
# confusion-matrix cells with hundreds of images, more than one page of the gallery.
FASHION = RunConfig(
    data=DataConfig(dataset="fashion-mnist", val_size=500, train_limit=1000),
    model=ModelConfig("mlp"),
    train=TrainConfig(epochs=1, batch_size=100, lr=3e-3, schedule="constant", bf16="off"),
)
PER_PAGE = 48  # views/evaluate.py's GALLERY_LIMIT


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A store with two tiny digits runs (10 classes named "0".."9") and, where the data is
    installed, a tiny Fashion-MNIST run: {"root", "digits", "digits2", "fashion"}."""
    root = tmp_path_factory.mktemp("evaluate-pages-store")
    other = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, seed=1))
    configs = {"digits": TINY, "digits2": other}
    if fashion_available():
        configs["fashion"] = FASHION
    found = {k: list(train_or_load(cfg, Store(root)))[-1].meta for k, cfg in configs.items()}
    return {"root": root, "fashion": None, **found}


@pytest.fixture
def store(runs, monkeypatch):
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(runs["root"]))
    st.cache_data.clear()
    st.cache_resource.clear()
    yield runs
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def named_store(runs, tmp_path, monkeypatch):
    """A copy of the store, for a test that names runs (names.json is written beside them)."""
    import shutil

    root = tmp_path / "store"
    shutil.copytree(runs["root"], root)
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(root))
    st.cache_data.clear()
    st.cache_resource.clear()
    yield {**runs, "root": root}
    st.cache_data.clear()
    st.cache_resource.clear()


def open_page(name: str, lang: str = "en", **state) -> AppTest:
    """views/<name>.py run once in ``lang`` with ``state`` in the session beforehand."""
    at = AppTest.from_file(str(ROOT / "views" / f"{name}.py"), default_timeout=120)
    at.session_state["lang"] = lang
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def figures(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def figure_with(at: AppTest, trace_type: str, **where) -> dict:
    """The one figure with a trace of ``trace_type`` (and ``where``'s attributes)."""
    (found,) = [f for f in figures(at) if any(d.get("type") == trace_type and
                                              all(d.get(k) == v for k, v in where.items())
                                              for d in f["data"])]  # fmt: skip
    return found


def array(value) -> np.ndarray:
    """A figure's array as Plotly writes it: a list, or typed bytes ({dtype, bdata})."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    return np.asarray(value)


def shown(table) -> list[list[str]]:
    """What the browser shows of a st.dataframe given a Styler: the Styler's display values,
    except for a missing value, which it draws as the table's placeholder whatever the
    Styler wrote ("None" when the table has no placeholder)."""
    values = table.proto.arrow_data.styler.display_values
    assert values, "the table was not given as a Styler"
    cells = dataframe_util.convert_arrow_bytes_to_pandas_df(values).astype(str).values
    placeholder = table.proto.placeholder if table.proto.HasField("placeholder") else "None"
    cells[table.value.isna().values] = placeholder
    return cells.tolist()


def cell_images(at: AppTest) -> str:
    (grid,) = [h.proto.body for h in at.get("html") if 'data-gallery="cell"' in h.proto.body]
    return grid


def texts(at: AppTest) -> list[str]:
    """Every string a reader can see: text elements, widget labels and options, tables
    (headers, index and cells) and the charts' strings."""
    found = [e.value for kind in ("title", "subheader", "markdown", "caption", "info", "warning")
             for e in getattr(at, kind)]  # fmt: skip
    for kind in ("selectbox", "multiselect", "text_input", "toggle", "checkbox", "radio"):
        for w in getattr(at, kind):
            found += [w.label, w.help or "", *getattr(w, "options", [])]
    found += [m.label for m in at.metric] + [m.value for m in at.metric]
    for table in at.dataframe:
        frame = table.value
        found += [str(c) for c in frame.columns] + [str(i) for i in frame.index]
        found += [v for row in shown(table) for v in row]

    for fig in figures(at):
        found += chart_texts(fig)
    return found


def chart_texts(fig: dict) -> list[str]:
    """A figure's visible strings: trace names, texts and hover templates, axis titles and
    tick labels, annotations (not Plotly's property values such as "markers")."""
    found = []
    for trace in fig["data"]:
        text = trace.get("text")
        found += [trace.get("name") or "", trace.get("hovertemplate") or ""]
        found += text if isinstance(text, list) else [text or ""]
    layout = fig["layout"]
    for key, axis in layout.items():
        if re.fullmatch(r"[xy]axis\d*", key):
            found += [(axis.get("title") or {}).get("text") or "", *axis.get("ticktext", [])]
    found += [a.get("text") or "" for a in layout.get("annotations", [])]
    return [str(v) for v in found]


# -- Evaluate ------------------------------------------------------------------------------
@needs_fashion
def test_the_cell_gallery_says_how_many_it_shows_and_pages_through_the_rest(store):
    meta = store["fashion"]
    cm = np.array(meta["test"]["confusion_matrix"])
    true, pred = np.unravel_index(cm.argmax(), cm.shape)  # the fullest cell
    count = int(cm[true, pred])
    assert count > PER_PAGE
    cell = int(true * len(cm) + pred)
    at = open_page("evaluate", run=meta["run_id"], cm_cell=(meta["run_id"], cell))
    captions = [c.value for c in at.caption]
    assert f"Showing 1–{PER_PAGE} of {count:,}." in captions
    assert cell_images(at).count("<img ") == PER_PAGE
    (pages,) = at.pagination
    assert pages.num_pages == -(-count // PER_PAGE) and pages.value == 1

    pages.select(pages.num_pages).run()  # the last page: the rest of the cell
    assert not at.exception
    first = PER_PAGE * (pages.num_pages - 1) + 1
    assert f"Showing {first:,}–{count:,} of {count:,}." in [c.value for c in at.caption]
    assert cell_images(at).count("<img ") == count - first + 1


def test_a_cell_that_fits_on_one_page_shows_all_its_images_without_pages(store):
    meta = store["digits"]
    cm = np.array(meta["test"]["confusion_matrix"])
    at = open_page("evaluate", run=meta["run_id"], cm_cell=(meta["run_id"], 3 * 10 + 3))
    assert cm[3, 3] <= PER_PAGE and not at.pagination
    assert cell_images(at).count("<img ") == cm[3, 3]
    assert not any(c.value.startswith("Showing") for c in at.caption)
    assert f"**{cm[3, 3]}** test images of **3** predicted as **3**:" in [
        m.value for m in at.markdown
    ]
    # A cell clicked on another run's matrix opens nothing here.
    other = open_page("evaluate", run=meta["run_id"], cm_cell=(store["digits2"]["run_id"], 33))
    assert not [h for h in other.get("html") if 'data-gallery="cell"' in h.proto.body]


def test_the_confusion_matrix_of_digits_names_all_ten_classes_on_both_axes(store):
    meta = store["digits"]
    assert meta["classes"] == [str(d) for d in range(10)]
    layout = figure_with(open_page("evaluate", run=meta["run_id"]), "heatmap")["layout"]
    for axis in (layout["xaxis"], layout["yaxis"]):
        assert axis.get("type") == "category"  # text categories, not a numeric axis 0, 2...
        assert axis.get("tickmode") == "array"
        assert list(axis["tickvals"]) == list(axis["ticktext"]) == meta["classes"]


def test_per_class_accuracy_is_sorted_from_the_hardest_class(store):
    meta = store["digits2"]
    (bars,) = figure_with(open_page("evaluate", run=meta["run_id"]), "bar", orientation="h")["data"]
    accuracy = array(bars["x"])
    assert list(accuracy) == sorted(accuracy)  # ascending, drawn top-down (autorange reversed)
    expected = {name: r["accuracy"] for name, r in meta["test"]["per_class"].items()}
    assert dict(zip(bars["y"], accuracy, strict=True)) == pytest.approx(expected)
    assert len(set(accuracy)) > 1  # the order means something for this run


def test_the_report_writes_counts_whole_and_scores_with_four_decimals(store):
    meta = store["digits"]
    at = open_page("evaluate", run=meta["run_id"])
    report = at.dataframe[0]
    cells = shown(report)
    assert not any(v in ("None", "nan") for row in cells for v in row)
    support = list(report.value.columns).index("images")
    supports = [row[support] for row in cells]
    assert all(re.fullmatch(r"\d{1,3}(,\d{3})*", v) for v in supports), supports
    assert supports[-1] == f"{meta['test']['support']:,}"
    scores = [row[1] for row in cells]  # precision, a perfect one included: 1.0000
    assert all(re.fullmatch(r"[01]\.\d{4}", v) for v in scores), scores
    assert list(report.value.columns) == ["Class", "precision", "recall", "F1", "images"]


def test_naming_a_run_shows_the_name_in_its_labels(named_store):
    meta = named_store["digits"]
    at = open_page("evaluate", run=meta["run_id"])
    box = at.text_input(key=f"ev_name_{meta['run_id']}")
    assert box.label == "Name this run" and box.value == ""
    box.input("  CNN\x07 with   dropout ").run()
    assert not at.exception
    assert at.text_input(key=f"ev_name_{meta['run_id']}").value == "CNN with dropout"  # as kept
    assert any(
        o.startswith("CNN with dropout · mlp · ") for o in at.selectbox(key="ev_run").options
    )
    assert Store(named_store["root"]).names() == {meta["run_id"]: "CNN with dropout"}
    # Every page's labels carry it: Compare's picker and its table's column.
    st.cache_data.clear()
    compare = open_page("compare", run=meta["run_id"])
    assert any(o.startswith("CNN with dropout · ") for o in compare.multiselect[0].options)
    assert any(str(c).startswith("CNN with dropout · ") for c in compare.dataframe[0].value)


# -- Compare -------------------------------------------------------------------------------
def test_compare_opens_on_the_run_picked_elsewhere(store):
    oldest = store["digits"]["run_id"]  # the store lists newest first
    picker = open_page("compare", run=oldest).multiselect(key="cmp_runs")
    assert oldest in picker.value and len(picker.value) == 2


@needs_fashion
def test_the_compare_table_writes_epochs_whole_seconds_short_and_a_dash_for_none(store):
    fashion, digits = store["fashion"], store["digits"]
    at = open_page("compare", run=fashion["run_id"])
    at.multiselect(key="cmp_runs").set_value([fashion["run_id"], digits["run_id"]]).run()
    table = at.dataframe[0]
    frame, cells = table.value, shown(table)
    # The fashion run, seed 000's Table 2 (the MLP's) beside it, the digits run.
    assert list(frame.columns)[1] == "seed 000, Table 2" and frame.shape[1] == 3
    assert not any(v in ("None", "nan") for row in cells for v in row)
    rows = {name: cells[i] for i, name in enumerate(frame.index)}
    assert rows["epochs"] == ["1", "—", "2"]  # the paper gives no epochs
    seconds = rows["training time (s)"]
    assert seconds[1] == "—" and all(re.fullmatch(r"\d+\.\d", seconds[i]) for i in (0, 2))
    assert rows["macro recall"][1] == "—"  # the paper gave none
    assert all(re.fullmatch(r"[01]\.\d{4}", v) for v in rows["test accuracy"])


# -- Embeddings ----------------------------------------------------------------------------
def map_of(at: AppTest) -> list[dict]:
    """The map's traces (the chart with lasso selection)."""
    (fig,) = [f for f in figures(at) if f["layout"].get("dragmode") == "lasso"]
    return fig["data"]


def predictions(meta: dict, root) -> tuple[np.ndarray, np.ndarray]:
    from core import data as datasets

    data = datasets.load(DataConfig(**meta["config"]["data"]))
    probs = Store(root).test_probs(meta["run_id"])
    return data.y_test, probs.argmax(1)


def test_mistakes_only_leaves_the_misclassified_points_and_rings_mark_them(store):
    meta = store["digits"]
    y, pred = predictions(meta, store["root"])
    wrong = np.flatnonzero(pred != y)
    assert 0 < len(wrong) < len(y)
    at = open_page("embeddings", run=meta["run_id"], emb_method="pca")
    assert at.selectbox(key="emb_source").value == meta["run_id"]
    every = np.concatenate([array(d["customdata"]) for d in map_of(at)])
    assert sorted(every) == list(range(len(y)))  # all the test images

    at.checkbox(key="emb_only_wrong").check().run()
    assert not at.exception
    traces = map_of(at)
    shown_ = np.concatenate([array(d["customdata"]) for d in traces])
    assert sorted(shown_) == list(wrong)  # the mistakes, and only them
    for c, trace in enumerate(traces):  # each in its true class's trace
        assert (y[array(trace["customdata"]).astype(int)] == c).all()

    at.checkbox(key="emb_only_wrong").uncheck()
    at.checkbox(key="emb_highlight").check().run()
    assert not at.exception
    *classes, rings = map_of(at)
    assert len(classes) == 10 and rings["marker"]["symbol"] == "circle-open"
    assert list(array(rings["customdata"])) == list(wrong)
    assert sum(len(array(d["customdata"])) for d in classes) == len(y)  # every dot still drawn


def test_the_map_opens_on_the_run_picked_elsewhere_and_its_pick_is_shared(store):
    first, second = store["digits"]["run_id"], store["digits2"]["run_id"]
    at = open_page("embeddings", run=first, emb_method="pca")
    assert at.selectbox(key="emb_source").value == first
    at.selectbox(key="emb_source").select(second).run()
    assert not at.exception
    assert at.session_state["run"] == second  # the other pages open on it
    at.selectbox(key="emb_source").select("pixels").run()  # raw pixels stay this page's
    assert not at.exception and at.session_state["run"] == second


# -- Spanish -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["evaluate", "compare", "embeddings"])
def test_spanish_pages_show_no_english_score_names(store, name):
    meta = store["fashion"] or store["digits"]
    state = {"run": meta["run_id"], "cm_cell": (meta["run_id"], 0), "emb_method": "pca"}
    at = open_page(name, "es", **state)
    if name == "embeddings":
        at.checkbox(key="emb_highlight").check().run()
    seen = " ".join(texts(at)).lower()
    assert "precisión" in seen or name == "embeddings"  # the text was read at all
    for english in ("precision", "recall", "showing", "images", "none", "run ", "epochs"):
        assert english not in seen, (name, english)
    if name != "embeddings":
        cells = [v for table in at.dataframe for row in shown(table) for v in row]
        assert any(re.fullmatch(r"0,\d{4}", v) for v in cells)  # Spanish decimals


def test_every_new_label_has_english_and_spanish():
    for page in ("evaluate", "embeddings", "compare", "charts"):
        table = json.loads((ROOT / "assets" / "i18n" / f"{page}.json").read_text())
        assert all(set(v) == {"en", "es"} and all(v.values()) for v in table.values()), page


def test_a_cell_number_maps_to_its_true_and_predicted_class():
    """The gallery reads cell k as (true k // n, predicted k % n), as the chart numbers it."""
    y_true, y_pred = np.array([0, 1, 1, 2]), np.array([0, 2, 1, 2])
    true, pred = divmod(1 * 3 + 2, 3)
    assert list(metrics.pair_indices(y_true, y_pred, true, pred)) == [1]


def test_a_run_has_a_read_only_share_link_with_nothing_of_its_viewer(store):
    """Issue 18: the Evaluate page offers a link to the run that names the run and the
    language, and nothing of the student who copies it (no token, no job)."""
    run_id = store["digits"]["run_id"]
    at = open_page("evaluate", lang="es", run=run_id, user="0123456789abcdef", job="j1")
    links = [c.value for c in at.code]
    assert links == [f"/evaluate?run={run_id}&lang=es"]
    assert "0123456789abcdef" not in links[0] and "j1" not in links[0]


def test_a_link_with_someones_token_does_not_make_its_opener_that_student(monkeypatch, tmp_path):
    """Issue 18: the token of an old link (?user=...) is neither adopted nor kept in the
    address; the visitor gets a token of their own (kept in a cookie, not the URL)."""
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["user"] = "0123456789abcdef"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    mine = at.session_state["user"]
    assert mine != "0123456789abcdef" and len(mine) == 16
    assert "user" not in at.query_params


# -- Evaluate: calibration -----------------------------------------------------------------
def test_the_reliability_diagram_follows_the_temperature_and_a_bin_shows_exactly_its_images(
    named_store,
):
    """Issue 21, item 1: at the fitted temperature the diagram is the scaled probabilities'
    reliability; another temperature moves it; a clicked bin lists its test images, all of
    them and only them."""
    from core import calibration as cal
    from core import data as datasets
    from core.config import from_dict

    meta = named_store["digits"]
    store = Store(named_store["root"])
    at = open_page("evaluate", run=meta["run_id"])
    probs = store.test_probs(meta["run_id"])
    data = datasets.load(from_dict(meta["config"]).data)
    fitted = cal.fit_temperature(store.read_array(store.run_file(meta["run_id"], cal.VAL_LOGITS),
                                 (data.y_val.size, 10)), data.y_val)  # fmt: skip
    (slider,) = [s for s in at.select_slider if s.key == f"ev_t_{meta['run_id']}"]
    assert slider.value == round(fitted, 2)
    shown = cal.reliability(cal.scaled(cal.as_logits(probs), slider.value), data.y_test)
    bars = figure_with(at, "bar", name="accuracy in the bin")["data"][0]
    assert list(array(bars["y"])) == pytest.approx([a or 0 for a in shown["accuracy"]])
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Calibration error (T = 1)"] == f"{cal.ece(probs, data.y_test):.4f}"
    assert metrics["Calibration error at this T"] == f"{shown['ece']:.4f}"
    slider.set_value(4.0).run()
    hot = cal.reliability(cal.scaled(cal.as_logits(probs), 4.0), data.y_test)
    assert {m.label: m.value for m in at.metric}["Calibration error at this T"] == (
        f"{hot['ece']:.4f}"
    )
    fullest = int(np.argmax(hot["counts"]))
    at.session_state["cal_bin"] = (meta["run_id"], fullest)
    at.run()
    count = hot["counts"][fullest]
    assert any(m.value.startswith(f"{count} test images with confidence") for m in at.markdown)
    (pictures,) = [h.proto.body for h in at.get("html") if 'data-gallery="bin"' in h.proto.body]
    assert pictures.count("<img ") == min(count, PER_PAGE)
