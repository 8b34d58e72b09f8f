"""Class names are text, everywhere (issue 18, item 2): a class folder's name is kept in a
safe, short form when its dataset is scanned, the renames are reported, and every page that
shows a class name renders it as text; so are the raw names an older run's metadata holds."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from conftest import TINY
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest
from test_backbone import write_photos
from test_evaluate_pages import open_page

from core import UserError
from core.config import DataConfig, RunConfig
from core.data import folder
from core.runs import train_or_load
from core.store import META, Store, meta_checksum
from ui import charts, gallery
from ui.text import plain

# Folder names a student's zip may hold ("/" cannot be in one), and the names the scan keeps.
FOLDERS = ("<img src=x onerror=alert(1)>", "[click](http:example.com)", "www.example.com", "ants")
CLASSES = ("_img src_x onerror_alert(1)_", "_click_(http_example.com)", "www.example.com", "ants")
# Names a run trained before the scan kept safe names may carry in its metadata.
RAW = ("<img src=x onerror=alert(1)>", "[click](http://example.com)",
       "<a href=http://example.com>x</a>", "ants")  # fmt: skip
# A name people gave a run: printable characters, so a tag too.
RUN_NAME = "<a href=//example.com>me</a>"


# -- the scan ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "folder_name, shown",
    [
        ("Camión", "Camión"),
        ("Came\u0301", "Camé"),  # a Mac's decomposed accent: one letter
        ("a\u202eb\u200bc", "a_b_c"),  # bidi override, zero-width space
        ("  two   spaces ", "two spaces"),
        ("x" * 60, "x" * folder.MAX_NAME),
        ("Ω-7 (b+c), d_e.f", "Ω-7 (b+c), d_e.f"),
        ("a:*?|\"'`b", "a_b"),
    ],
)
def test_a_class_is_named_by_its_folder_in_a_safe_short_form(folder_name, shown):
    assert folder.class_name(folder_name) == shown


def test_the_scan_renames_unsafe_folders_and_says_which(tmp_path):
    listing = folder.scan(write_photos(tmp_path / "set", FOLDERS, per_class=2))
    assert sorted(listing.classes) == sorted(CLASSES)
    assert dict(listing.renamed) == {f: c for f, c in zip(FOLDERS, CLASSES, strict=True)
                                     if f != c}  # fmt: skip
    names = {listing.classes[c] for items in listing.files.values() for _, c in items}
    assert names == set(CLASSES)  # each folder's images under its own class


def test_folders_named_alike_once_safe_are_refused(tmp_path):
    write_photos(tmp_path / "clash", ("a<b", "a>b"), per_class=2)
    with pytest.raises(UserError, match=r"more than one class folder is named 'a_b'"):
        folder.scan(tmp_path / "clash")
    write_photos(tmp_path / "blank", ("   ", "ants"), per_class=2)
    with pytest.raises(UserError, match="a class folder's name is blank"):
        folder.scan(tmp_path / "blank")


def test_the_identity_changes_with_a_folder_name_the_class_name_hides(tmp_path):
    one = folder.scan(write_photos(tmp_path / "one", ("a<b", "ants"), per_class=2))
    two = folder.scan(write_photos(tmp_path / "two", ("a>b", "ants"), per_class=2))
    assert one.classes == two.classes
    assert folder.fingerprint(one) != folder.fingerprint(two)
    plain_set = folder.scan(write_photos(tmp_path / "three", ("bees", "ants"), per_class=2))
    assert plain_set.renamed == ()  # nothing renamed: the identity is computed as before


# -- what shows a name ---------------------------------------------------------------------


class Tags(HTMLParser):
    def __init__(self, body: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text = ""
        self.feed(body)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text += data


def unsafe_html(body: str) -> list[str]:
    """What in ``body`` a browser would make a link, a fetched image or a script of."""
    tags = Tags(body).tags
    fetched = [tag for tag, attrs in tags if tag == "img" and attrs.get("src")[:5] != "data:"]
    found = [tag for tag, _ in tags if tag == "a"] + fetched
    return found + [name for _, attrs in tags for name in attrs if name.startswith("on")]


def unsafe_markdown(text: str) -> list[str]:
    """``unsafe_html`` of ``text`` rendered as Markdown, and the bare addresses GitHub's
    Markdown (Streamlit's) would link in its text."""
    rendered = MarkdownIt("commonmark", {"html": True}).render(text)
    bare = re.findall(r"https?://\S+|(?<![\w\u2060])www\.\S+", Tags(rendered).text)
    return unsafe_html(rendered) + bare


@pytest.mark.parametrize("name", [*RAW, *FOLDERS, "a@example.com", ":red[x] :smile:"])
def test_plain_markdown_shows_a_name_as_it_is(name):
    rendered = MarkdownIt("commonmark", {"html": True}).render(f"**{plain(name)}**")
    assert not unsafe_markdown(f"**{plain(name)}**"), rendered
    assert Tags(rendered).text.replace("\u2060", "").strip() == name


def test_galleries_and_charts_escape_raw_names():
    images = np.zeros((len(RAW), 1, 4, 4), np.uint8)
    body = gallery.gallery_html(images, list(RAW), [True, False, True, False])
    assert not unsafe_html(body), body
    matrix = np.eye(len(RAW), dtype=int).tolist()
    frame = pd.DataFrame({"images": [1, 2, 3, 4]}, index=list(RAW))
    for fig in (charts.confusion(matrix, list(RAW), False),
                charts.per_class(list(RAW), [0.1, 0.2, 0.3, 0.4], "accuracy"),
                charts.counts(frame, "images")):  # fmt: skip
        assert not raw_tags(fig.to_json())


def raw_tags(figure_json: str) -> list[str]:
    """Tags Plotly would render in a figure's strings (its own <br> and <extra> aside)."""
    return re.findall(r"<(?:img|a)\b[^>]*>", " ".join(strings(json.loads(figure_json))), re.I)


def strings(value) -> list[str]:
    """Every string in a decoded JSON value (Plotly writes "<" as "\\u003c")."""
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [s for item in items for s in strings(item)]


def test_renamed_folders_are_one_line_of_text():
    from ui.i18n import renamed_folders

    line = renamed_folders(list(zip(FOLDERS, CLASSES, strict=True))[:2])
    assert not unsafe_markdown(line), line
    assert "img src" in line and "shown under another name" in line


# -- the pages -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A store with two tiny runs on a dataset of hostile folder names ("safe"), and a copy
    whose first run's metadata holds raw hostile class names, as an older run's could."""
    base = tmp_path_factory.mktemp("hostile")
    data = DataConfig(dataset=str(write_photos(base / "photos", FOLDERS, per_class=12)),
                      val_size=8, image_size=16)  # fmt: skip
    runs = []
    for seed in (0, 1):
        train = dataclasses.replace(TINY.train, seed=seed)
        cfg = RunConfig(data=data, model=TINY.model, train=train)
        runs.append(list(train_or_load(cfg, Store(base / "safe")))[-1].meta)
    assert set(runs[0]["classes"]) == set(CLASSES)
    Store(base / "safe").set_name(runs[1]["run_id"], RUN_NAME)
    shutil.copytree(base / "safe", base / "raw")
    path = Store(base / "raw").path(runs[0]["run_id"]) / META
    meta = json.loads(path.read_text())
    renamed = dict(zip(meta["classes"], (RAW[CLASSES.index(c)] for c in meta["classes"]),
                       strict=True))  # fmt: skip
    meta["classes"] = [renamed[c] for c in meta["classes"]]
    meta["test"]["per_class"] = {renamed[c]: v for c, v in meta["test"]["per_class"].items()}
    meta["checksum"] = meta_checksum(meta)
    path.write_text(json.dumps(meta, indent=1))
    assert Store(base / "raw").meta(meta["run_id"])["classes"] == meta["classes"]
    return {"root": base, "run": runs[0]["run_id"], "other": runs[1]["run_id"]}


def page(name: str, root, monkeypatch, **state) -> AppTest:
    """views/<name>.py on the store at ``root`` (Streamlit's caches cleared: it sees it)."""
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(root))
    st.cache_data.clear()
    st.cache_resource.clear()
    return open_page(name, **state)


def markdown_texts(at: AppTest) -> list[str]:
    """What the page renders as Markdown: text elements, widget labels and radio options,
    image captions."""
    kinds = ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error")
    found = [e.value for kind in kinds for e in getattr(at, kind)]
    for kind in ("selectbox", "multiselect", "radio", "toggle", "checkbox", "number_input"):
        found += [w.label for w in getattr(at, kind)]
    found += [str(o) for w in at.radio for o in w.options]
    found += [c for image in at.image for c in image.captions if c]
    return found  # fmt: skip


def check(at: AppTest) -> None:
    for text in markdown_texts(at):
        assert not unsafe_markdown(text), text
    for element in at.get("html"):
        assert not unsafe_html(element.proto.body), element.proto.body
    for chart in at.get("plotly_chart"):
        assert not raw_tags(chart.proto.spec), chart.proto.spec


@pytest.mark.parametrize("store", ["safe", "raw"])
def test_pages_show_hostile_class_names_as_text(hostile, store, monkeypatch):
    root, run = hostile["root"] / store, hostile["run"]
    evaluate = page("evaluate", root, monkeypatch, run=run, cm_cell=(run, 0))
    assert [h for h in evaluate.get("html") if 'data-gallery="cell"' in h.proto.body]
    shown = " ".join(markdown_texts(evaluate))
    assert "img src" in shown  # the names are there, as text
    check(evaluate)
    check(page("inside", root, monkeypatch, run=run))
    if store == "safe":  # these show the dataset's own names, the same in both stores
        check(page("embeddings", root, monkeypatch, run=run, emb_method="pca"))
        compare = page("compare", root, monkeypatch, run=run)
        assert len(compare.multiselect(key="cmp_runs").value) == 2
        check(compare)
        assert any("&lt;a href" in c.proto.spec for c in compare.get("plotly_chart"))
