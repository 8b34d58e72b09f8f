"""One run as one self-contained HTML report (issue 20, items 6 and 7): ``python -m core
report RUN --out FILE`` and the Evaluate page's download button. The page loads nothing
from anywhere, speaks English or Spanish throughout, and shows people's names as text."""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
import re
import shutil
import threading

import numpy as np
import pytest
import streamlit as st
from conftest import ROOT, fashion_available, needs_fashion
from PIL import Image

from core import cli, presets, report
from core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from core.store import Store
from ui.text import paper_source, table

# seed 000's MLP on a slice of Fashion-MNIST for one epoch (about 2 s): paper_for gives
# seed 000's Table 2 for it.
FASHION = RunConfig(
    data=DataConfig(dataset="fashion-mnist", val_size=500, train_limit=1000),
    model=ModelConfig("mlp"),
    train=TrainConfig(epochs=1, batch_size=100, lr=3e-3, schedule="constant", bf16="off"),
)
PNG = "data:image/png;base64,"


def run(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def write(capsys, tmp_path, run_id: str, root, *more: str) -> tuple[str, str]:
    """The report the command line writes: (its HTML, the line it printed)."""
    out = tmp_path / "report.html"
    code, said, err = run(capsys, "report", run_id, "--out", str(out), "--store", str(root),
                          *more)  # fmt: skip
    assert code == 0, err
    return out.read_text(encoding="utf-8"), said


def confusion_cells(page: str) -> tuple[list[int], list[int]]:
    """The counts of the confusion matrix's diagonal and of its other cells, as printed."""

    def counts(kind: str) -> list[int]:
        found = re.findall(rf'<td class="{kind}"[^>]*>([\d.,]+)</td>', page)
        return [int(re.sub(r"[.,]", "", n)) for n in found]

    return counts("hit"), counts("miss")


def loads_nothing(page: str) -> None:
    """No script, style sheet, font, frame or picture comes from anywhere but the page."""
    lowered = page.lower()
    for tag in ("<script", "<link", "<iframe", "<object", "<embed", "@import", "url("):
        assert tag not in lowered, tag
    sources = re.findall(r'\ssrc="([^"]*)"', page)
    assert sources and all(s.startswith(PNG) for s in sources)
    assert not re.search(r'(src|href)="(https?:)?//[^"]*\.(js|css|woff2?|ttf|png|svg)', lowered)
    assert "content=\"default-src 'none'" in page  # and the browser refuses it if there were


@pytest.fixture
def no_app_url(monkeypatch):
    monkeypatch.delenv(report.URL_ENV, raising=False)


# -- what it holds -------------------------------------------------------------------------
def test_the_report_holds_the_whole_run_and_loads_nothing(tiny_run, tmp_path, capsys,
                                                         no_app_url):  # fmt: skip
    meta, run_id = tiny_run.meta, tiny_run.run_id
    page, said = write(capsys, tmp_path, run_id, tiny_run.root)
    size = (tmp_path / "report.html").stat().st_size
    assert (
        said == f"report of {run_id} written to {tmp_path / 'report.html'} ({size / 1024:,.0f} KB)"
    )
    loads_nothing(page)
    # The title, the config and its values as people read them.
    assert "<h1>mlp · digits (8x8, upscaled to 28x28)</h1>" in page and run_id in page
    assert re.search(r'<th scope="row">Batch size</th><td>64</td>', page)
    assert re.search(r'<th scope="row">Learning rate</th><td>0\.003</td>', page)
    assert re.search(r'<th scope="row">Training images</th><td>256</td>', page)
    assert re.search(r'<th scope="row">Hidden dense layers</th><td>256</td>', page)  # mlp's own
    # Two curves (loss and accuracy), each an SVG with one dot per epoch and series.
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    assert len(svgs) == 2 and all(s.count("<circle") == 2 * 2 + 2 for s in svgs)  # + legend
    assert "training</text>" in svgs[0] and "validation</text>" in svgs[0]
    # The scores, the confusion matrix (its diagonal: the images predicted right).
    test = meta["test"]
    assert f">{test['accuracy']:.4f}<" in page and f">{test['roc_auc_macro']:.4f}<" in page
    hits, misses = confusion_cells(page)
    assert hits == np.diag(test["confusion_matrix"]).tolist()
    assert sum(hits) == round(test["accuracy"] * test["support"])
    assert sum(hits) + sum(misses) == test["support"]
    # Per class and the averages.
    for name, row in test["per_class"].items():
        assert re.search(rf'<th scope="row">{name}</th><td>{row["precision"]:.4f}</td>', page)
    assert f"macro average</th><td>{test['macro_precision']:.4f}</td>" in page
    # The worst mistakes, as pictures big enough to see, and the run's link.
    probs = Store(tiny_run.root).test_probs(run_id)
    wrong = int((probs.argmax(1) != np.array(_labels(tiny_run))).sum())
    pictures = re.findall(rf'<img src="{re.escape(PNG)}([^"]+)"', page)
    assert len(pictures) == min(report.MISTAKES, wrong) > 0
    image = Image.open(io.BytesIO(base64.b64decode(pictures[0])))
    assert image.size[0] >= report.PICTURE and image.size == (28 * 4, 28 * 4)
    link = f"http://localhost:8501/evaluate?run={run_id}&lang=en"
    assert f'<a href="{html.escape(link)}">' in page


def _labels(tiny_run) -> np.ndarray:
    from core import data as datasets

    return datasets.load(tiny_run.cfg.data).y_test


def test_the_link_goes_to_the_apps_address(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(report.URL_ENV, "https://class.example.org/cnn/")
    page, _ = write(capsys, tmp_path, tiny_run.run_id, tiny_run.root)
    assert f"https://class.example.org/cnn/evaluate?run={tiny_run.run_id}&amp;lang=en" in page
    page, _ = write(capsys, tmp_path, tiny_run.run_id, tiny_run.root, "--app-url",
                    "http://10.0.0.5:8501", "--lang", "es")  # fmt: skip
    assert f'href="http://10.0.0.5:8501/evaluate?run={tiny_run.run_id}&amp;lang=es"' in page


def test_the_spanish_report_speaks_spanish(tiny_run, tmp_path, capsys):
    page, _ = write(capsys, tmp_path, tiny_run.run_id, tiny_run.root, "--lang", "es")
    loads_nothing(page)
    assert '<html lang="es">' in page
    for words in ("Configuración", "Curvas de aprendizaje", "Matriz de confusión",
                  "Los peores errores", "Tamaño de lote", "exhaustividad", "promedio macro",
                  "dígitos (8x8, ampliados a 28x28)", "entrenamiento</text>"):  # fmt: skip
        assert words in page, words
    english = {v["en"] for k, v in table().items() if k.startswith("rp_") and v["en"] != v["es"]}
    visible = re.sub(r"<[^>]+>", "\n", page.split("</style>", 1)[1])
    leaks = [w for w in english if re.search(rf"(?<!\w){re.escape(w)}(?!\w)", visible)]
    assert leaks == []
    test = tiny_run.meta["test"]
    assert f">{test['accuracy']:.4f}<".replace(".", ",") in page  # decimal commas
    assert re.search(r'<th scope="row">Tasa de aprendizaje</th><td>0,003</td>', page)
    assert not re.search(r">0\.\d{4}<", page)


def test_names_people_chose_are_text(tiny_run, tmp_path, capsys):
    root = tmp_path / "store"
    shutil.copytree(tiny_run.root, root)
    evil = Store(root).set_name(tiny_run.run_id, '<script>alert(1)</script><b onclick="x">')
    assert evil == '<script>alert(1)</script><b onclick="x">'  # kept whole (40 at most)
    page, _ = write(capsys, tmp_path, tiny_run.run_id, root)
    assert "<script" not in page.lower() and "<b " not in page
    assert html.escape(evil) in page  # shown as it was typed, in the title and heading
    assert page.count(html.escape(evil)) == 2
    loads_nothing(page)


class Renamed:
    """A store whose run has classes of an uploaded dataset (names a student typed)."""

    def __init__(self, root, classes):
        self.store, self.classes = Store(root), classes

    def meta(self, run_id):
        meta = self.store.meta(run_id)
        return meta | {"classes": self.classes,
                       "dataset": meta["dataset"] | {"name": "<b>mine</b>"}}  # fmt: skip

    def names(self):
        return {}

    def test_probs(self, run_id):
        return self.store.test_probs(run_id)


def test_class_and_dataset_names_are_text(tiny_run):
    classes = [f"<i>c{i}</i>" for i in range(9)] + ['x" onmouseover="alert(1)']
    page = report.build(Renamed(tiny_run.root, classes), tiny_run.run_id, "en")
    assert "<i>" not in page and "<b>" not in page and '" onmouseover' not in page
    assert "&lt;i&gt;c0&lt;/i&gt;" in page and "&lt;b&gt;mine&lt;/b&gt;" in page
    assert "&quot; onmouseover=&quot;alert(1)" in page


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "is not a run id"),
        (["0123456789abcdef0123"], "no run 0123456789abcdef0123"),
        (["RUN", "--out", "/nonexistent-folder/report.html"], "a folder that exists"),
        (["RUN", "--out", "."], "a folder that exists"),
        (["RUN", "--app-url", "javascript:alert(1)"], "must be an http(s) URL"),
        (["RUN", "--lang", "fr"], "invalid choice"),
    ],
    ids=["not an id", "no such run", "no folder", "a folder", "bad app url", "bad language"],
)
def test_bad_input_is_one_line_and_writes_nothing(tiny_run, tmp_path, capsys, args, message):
    out = tmp_path / "report.html"
    args = [tiny_run.run_id if a == "RUN" else a for a in args]
    if "--out" not in args:
        args += ["--out", str(out)]
    code, said, err = run(capsys, "report", *args, "--store", str(tiny_run.root))
    assert code == 2 and said == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert not out.exists()


def test_a_damaged_run_is_one_line(tiny_run, tmp_path, capsys):
    root = tmp_path / "store"
    shutil.copytree(tiny_run.root, root)
    meta = root / "runs" / tiny_run.run_id / "meta.json"
    meta.write_text(meta.read_text().replace('"mlp"', '"cnn"', 1))
    code, _, err = run(capsys, "report", tiny_run.run_id, "--out", str(tmp_path / "r.html"),
                       "--store", str(root))  # fmt: skip
    assert (
        code == 2
        and err
        == f"error: run {tiny_run.run_id} is damaged or missing (its files do not check out)"
    )


# -- an autoencoder ------------------------------------------------------------------------
def test_an_autoencoders_report_has_its_config_curve_and_mse(tmp_path, capsys):
    from test_autoencoder import ae_config

    from core.runs import Stored, train_or_load

    root = tmp_path / "ae"
    stored = list(train_or_load(ae_config(epochs=2), Store(root)))[-1]
    assert isinstance(stored, Stored)
    page, _ = write(capsys, tmp_path, stored.run_id, root)
    assert "<h1>conv_autoencoder · digits (8x8, upscaled to 28x28)</h1>" in page
    assert f">{stored.meta['test']['mse']:.4f}<" in page and "Test MSE" in page
    assert page.count("<svg") == 1  # the loss: an autoencoder has no accuracy
    assert re.search(r'<th scope="row">Latent units</th><td>16</td>', page)
    assert "Confusion matrix" not in page and "<img" not in page and "<a href" not in page


# -- Fashion-MNIST: the paper's number beside ours -----------------------------------------
@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory):
    if not fashion_available():
        pytest.skip("Fashion-MNIST is not installed")
    from core.runs import Stored, train_or_load

    root = tmp_path_factory.mktemp("report-fashion")
    stored = list(train_or_load(FASHION, Store(root)))[-1]
    assert isinstance(stored, Stored) and stored.meta["dataset"]["name"] == "Fashion-MNIST"
    return root, stored


@needs_fashion
@pytest.mark.parametrize("lang", ["en", "es"])
def test_a_fashion_report_puts_the_papers_number_beside_ours(fashion_run, tmp_path, capsys,
                                                             lang):  # fmt: skip
    root, stored = fashion_run
    paper = presets.paper_for("mlp", "fashion-mnist")
    assert paper and paper["source"] == "seed 000, Table 2"
    page, _ = write(capsys, tmp_path, stored.run_id, root, "--lang", lang)
    loads_nothing(page)
    (line,) = re.findall(r'<p class="paper">(.*?)</p>', page)
    comma = (lambda s: s.replace(".", ",")) if lang == "es" else (lambda s: s)
    source = paper_source(paper["source"], lang)  # "seed 000, Table 2": it starts the line
    assert line.startswith(html.escape(source[:1].upper() + source[1:]) + " ")
    assert comma(f"{paper['accuracy']:.4f}") in line
    assert comma(f"{stored.meta['test']['accuracy']:.4f}") in line
    names = ["T-shirt/top", "Ankle boot"] if lang == "en" else ["Camiseta/top", "Botín"]
    assert all(f'<th scope="row">{n}</th>' in page for n in names)
    assert ("T-shirt/top" in page) == (lang == "en")
    assert len(re.findall(rf'<img src="{re.escape(PNG)}', page)) == report.MISTAKES
    hits, misses = confusion_cells(page)
    assert sum(hits) + sum(misses) == 10_000 and len(hits) == 10 and len(misses) == 90


def test_no_paper_for_a_run_the_papers_did_not_train(tiny_run, tmp_path, capsys):
    page, _ = write(capsys, tmp_path, tiny_run.run_id, tiny_run.root)
    assert presets.paper_for("mlp", "digits") is None and 'class="paper"' not in page


# -- charts ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("low", "high"), [(0.31, 0.97), (0.0, 2.3), (1.5, 1.5), (12, 340)])
def test_ticks_cover_the_values_with_round_steps(low, high):
    ticks = report.nice_ticks(low, high)
    assert ticks[0] <= low and ticks[-1] >= high and 3 <= len(ticks) <= 12
    (step,) = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    leading = step / 10 ** math.floor(math.log10(step))
    assert any(leading == pytest.approx(m) for m in (1, 2, 2.5, 5))


def test_one_epoch_is_a_dot_per_series():
    series = [("train", [0.5], "#000", False), ("val", [float("nan")], "#111", True)]
    svg = report.line_chart("Loss", "epoch", [1], series, "en")
    assert svg.count("<circle") == 2  # one dot, and the legend's: NaN is not drawn
    assert report.line_chart("Accuracy", "epoch", [1, 2], [("a", [float("nan")] * 2, "#000",
                                                              False)], "en") == ""  # fmt: skip


# -- the Evaluate page's button --------------------------------------------------------------
@pytest.mark.parametrize(("lang", "label"), [("en", "Download report (HTML)"),
                                              ("es", "Descargar informe (HTML)")])  # fmt: skip
def test_the_evaluate_page_offers_the_report_and_makes_it_only_when_clicked(
    tiny_run, tmp_path, monkeypatch, lang, label
):
    from streamlit.runtime.media_file_manager import MediaFileManager
    from streamlit.testing.v1 import AppTest

    made = []
    add = MediaFileManager.add_deferred

    def deferred(self, data_callable, *args, **kwargs):
        made.append((data_callable, args, kwargs))
        return add(self, data_callable, *args, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", deferred)
    root = tmp_path / "store"
    shutil.copytree(tiny_run.root, root)
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(root))
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "views" / "evaluate.py"), default_timeout=120)
    at.session_state["lang"] = lang
    at.session_state["run"] = tiny_run.run_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (button,) = at.get("download_button")
    assert button.label == label and button.proto.deferred_file_id  # made on a click only
    ((make, args, kwargs),) = made
    assert args[0] == "text/html" and kwargs["file_name"] == f"report-{tiny_run.run_id}.html"
    # Streamlit calls it on a thread of its own, without the page's context.
    result = {}
    worker = threading.Thread(target=lambda: result.update(page=make()))
    worker.start()
    worker.join(timeout=120)
    page = result["page"]
    assert f'<html lang="{lang}">' in page and tiny_run.run_id in page
    assert f"/evaluate?run={tiny_run.run_id}&amp;lang={lang}" in page  # the share link
    assert len(re.findall(rf'<img src="{re.escape(PNG)}', page)) > 0
    loads_nothing(page)


def test_ticks_of_a_flat_curve_end_and_cover_it():
    """A stalled loss (values one float apart) gets a padded axis, not an endless walk."""
    from core.report import nice_ticks

    low = high = 2.302585092994046
    for a, b in ((2.3025850929940455, high), (low, high), (0.0, 1e-14)):
        ticks = nice_ticks(a, b)
        assert 2 <= len(ticks) <= 22 and ticks[0] <= a and ticks[-1] >= b
        assert len(set(ticks)) == len(ticks)
