"""The Spanish UI shows no English: every page, opened in Spanish on a store with runs in
it, is searched for each text of the English catalogue (and core's English summaries)."""

from __future__ import annotations

import functools
import json
import re
import shutil

import pytest
import streamlit as st
from conftest import ROOT
from streamlit.testing.v1 import AppTest

from core import models, presets
from core.store import Store
from ui.text import CLASS_NAMES_ES, table

OWNER = "5a5a5a5a5a5a5a5a"
# A chart's fields that people read (its settings, such as legend.itemsizing "constant",
# are not text); a title's or an annotation's "text" counts under its parent's name.
CHART_TEXT = {"text", "title", "name", "hovertemplate", "texttemplate", "ticktext", "label"}
BILINGUAL = {"Language · Idioma"}  # the language switch speaks both on purpose
PAGES = [
    "home",
    "train",
    "evaluate",
    "compare",
    "embeddings",
    "inside",
    "autoencoder",
    "experiments",
    "pretraining",
    "class",
    "library",
]  # fmt: skip  (Classify is the Gradio tab: tests/test_gradio*.py)


@functools.cache
def english_texts() -> dict[str, str]:
    """{where it comes from: English text} for everything that has a Spanish version."""
    catalogue = table()
    spanish = [v["es"] for v in catalogue.values() if "es" in v]
    texts = {key: v["en"] for key, v in catalogue.items() if "en" in v and v["en"] != v.get("es")}
    texts |= {f"model {e.name}": e.summary for e in models.list_models()}
    texts |= {f"preset {p.name}": p.summary for p in presets.PRESETS.values()}
    texts |= {f"paper {p.name}": p.paper["source"] for p in presets.PRESETS.values() if p.paper}
    texts |= {f"class {en}": en for en in CLASS_NAMES_ES}
    # A word the Spanish text itself uses ("train/" folders, "MSE") is not a leak.
    return {k: v for k, v in texts.items()
            if _literal(v) and not any(_pattern(v).search(es) for es in spanish)}  # fmt: skip


def _literal(template: str) -> str:
    return re.sub(r"\{[^}]*\}", "", template).strip(" .,:;·()—-")


@functools.cache
def _pattern(template: str) -> re.Pattern:
    """``template`` as a regex: its placeholders match anything, whole words only."""
    parts = re.split(r"\{[^}]*\}", template)
    return re.compile(r"(?<!\w)" + ".+?".join(re.escape(p) for p in parts) + r"(?!\w)")


def strings(message) -> list[str]:
    """Every text field of a protobuf message, nested ones too (labels, help, options,
    bodies, captions, a chart's spec read as JSON)."""
    found = []
    for field, value in message.ListFields():
        values = value if field.is_repeated else [value]
        for v in values:
            if field.type == field.TYPE_MESSAGE:
                found += strings(v)
            elif field.type == field.TYPE_STRING:
                found += _json_strings(v) if field.name == "spec" else [v]
    return found


def _json_strings(text: str) -> list[str]:
    try:
        spec = json.loads(text)
    except ValueError:
        return [text]
    out: list[str] = []

    def walk(node, key=""):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k if k != "text" or key not in CHART_TEXT else key)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and key in CHART_TEXT:
            out.append(node)

    walk(spec)
    return out


def visible(at: AppTest) -> list[str]:
    """The texts a visitor can see or hear on the page (tooltips included)."""
    texts, stack = [], [at._tree]
    while stack:
        node = stack.pop()
        if (proto := getattr(node, "proto", None)) is not None:
            texts += strings(proto)
        if isinstance(getattr(node, "children", None), dict):
            stack += node.children.values()
    for frame in at.dataframe:  # the cells and column names (sent as Arrow bytes)
        df = frame.value
        texts += [str(c) for c in df.columns]
        texts += [v for col in df.columns for v in df[col].tolist() if isinstance(v, str)]
    return texts


@pytest.fixture(scope="module")
def spanish_store(tmp_path_factory, tiny_run):
    """A store with a classifier and an autoencoder in it, as a class's store has."""
    from dataclasses import replace

    from test_autoencoder import ae_config

    from core.runs import Stored, train_or_load

    root = tmp_path_factory.mktemp("spanish-store")
    shutil.copytree(Store(tiny_run.root).path(tiny_run.run_id), Store(root).path(tiny_run.run_id))
    second = replace(tiny_run.cfg, train=replace(tiny_run.cfg.train, seed=1))  # for Compare
    for cfg in (second, ae_config(epochs=1)):
        assert isinstance(list(train_or_load(cfg, Store(root)))[-1], Stored)
    return root


@pytest.fixture(scope="module")
def fresh_caches():
    """One server for every page: its caches emptied once, then filled by the first page
    (as a class's server is), not decoded again for each page."""
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.mark.parametrize("name", PAGES)
def test_a_spanish_page_shows_no_english(spanish_store, fresh_caches, monkeypatch, name):
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(spanish_store))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["lang"], at.session_state["user"] = "es", OWNER
    at.switch_page(f"views/{name}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    texts = [text for text in visible(at) if text not in BILINGUAL]
    assert len(texts) > 10, texts  # the page was drawn
    leaks = sorted({f"{where}: {english!r} in {text!r}"
                    for where, english in english_texts().items()
                    for text in texts if _pattern(english).search(text)})  # fmt: skip
    names = {e.name for e in models.list_models()}  # "ae_classifier" is a model and a key
    keys = sorted({text for text in texts  # a raw catalogue key shown instead of its text
                   if text in table() and "_" in text and text not in names})  # fmt: skip
    assert not leaks and not keys, "\n".join(leaks + keys)


def test_the_check_finds_english_where_there_is_some():
    """The search itself: an English label, a template's filled-in text and a chart's
    title are found; Spanish text and a word both languages use are not."""
    english = english_texts()

    def found(text: str) -> set[str]:
        return {k for k, e in english.items() if _pattern(e).search(text)}

    assert "cfg_epochs" in found("Epochs")
    assert not found("Comenzar") and not found("Épocas · Ejemplos de cada clase")
    progress = "epoch 2/5 · 1,234 images/s · about 9 s left · loss 0.300"
    assert _pattern(english["tr_progress"]).search(progress)
    assert "tr_split_train" not in english  # "train/" folders are named in the Spanish text
