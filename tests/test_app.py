"""The Streamlit app's home page, driven headless by streamlit.testing."""

from __future__ import annotations

import json
import shutil

import pytest
import streamlit as st
from conftest import ROOT
from streamlit.testing.v1 import AppTest

import core.data as datasets
from core import models, presets
from core.config import DataConfig


def translations() -> dict:
    table: dict = {}
    for path in sorted((ROOT / "assets" / "i18n").glob("*.json")):
        table |= json.loads(path.read_text())
    return table


I18N = translations()


def text(key: str, lang: str = "en") -> str:
    return I18N[key][lang]


def run_app() -> AppTest:
    """A new visitor's first view of the app (the home page)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> AppTest:
    """The home page of a fresh server whose store is empty."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNN_CLASSROOM_STORE", str(tmp_path_factory.mktemp("empty-store")))
        st.cache_data.clear()
        st.cache_resource.clear()
        try:
            return run_app()
        finally:
            st.cache_data.clear()
            st.cache_resource.clear()


@pytest.fixture(scope="module")
def home_data():
    return datasets.load(DataConfig())  # what the page shows: Fashion-MNIST or its fallback


def test_home_page_shows_its_sections(home):
    assert [t.value for t in home.title] == [text("title")]
    assert [h.value for h in home.header] == [text("dataset"), text("models"), text("runs")]
    subheaders = [s.value for s in home.subheader]
    assert text("samples") in subheaders and text("presets") in subheaders


def test_one_sample_strip_per_class(home, home_data):
    bold = [m.value for m in home.markdown if m.value.startswith("**")]
    labels = [m.strip("*").replace("\\", "") for m in bold if m.endswith("**")]  # escapes
    assert labels == list(home_data.classes)
    assert len(home.get("image")) == home_data.num_classes
    summary = " ".join(m.value for m in home.markdown)
    assert f"{len(home_data.y_train):,}" in summary and f"{len(home_data.y_test):,}" in summary


def test_model_table_lists_the_registry(home):
    table = home.dataframe[0].value
    assert list(table[text("model")]) == [e.name for e in models.list_models()]
    assert (table[text("parameters")] > 0).all()


def test_every_preset_has_a_button(home):
    keys = {b.key for b in home.button}
    assert {f"preset_{name}" for name in presets.PRESETS} <= keys
    page = " ".join(m.value for m in home.markdown)
    for name in presets.PRESETS:
        assert f"**{name}**" in page


def test_empty_store_has_no_runs_table(home):
    assert len(home.info) == 1
    assert len(home.dataframe) == 1  # the model table only


def test_spanish():
    at = run_app()
    at.sidebar.radio[0].set_value("es").run()
    assert not at.exception
    headers = [h.value for h in at.header]
    assert headers == [text("dataset", "es"), text("models", "es"), text("runs", "es")]
    assert "El conjunto de datos" in headers
    assert [t.value for t in at.title] == [text("title", "es")]
    # The choice belongs to that session: a new visitor still gets English.
    assert run_app().header[0].value == "The dataset"


def test_runs_table_shows_a_stored_run(tiny_run, tmp_path, monkeypatch):
    store = tmp_path / "store"
    shutil.copytree(tiny_run.root, store)
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(store))
    st.cache_data.clear()  # a server started with this store
    st.cache_resource.clear()
    try:
        at = run_app()
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()
    assert not at.info
    runs = at.dataframe[-1].value
    assert list(runs[text("run_name")]) == [tiny_run.run_id[:8]]  # no name given: its id
    assert list(runs[text("model")]) == ["mlp"]
    assert runs[text("accuracy")].iloc[0] == pytest.approx(
        tiny_run.meta["test"]["accuracy"], abs=1e-4
    )
    assert runs[text("epochs")].iloc[0] == 2


def test_a_class_password_comes_before_every_page(monkeypatch, tmp_path):
    """Issue 18: with CNN_CLASSROOM_PASSWORD set, nothing but the password page shows until
    it is given; a wrong one says so; the URL then keeps a token of it (not the password)
    that lets a refresh in, and a made-up token does not."""
    from core import access

    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(tmp_path))
    monkeypatch.setenv(access.PASSWORD_ENV, "tulipanes 7")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert [t.value for t in at.title] == [text("pw_title")] and not at.header  # no page
    at.text_input[0].input("tulipanes")
    at.button[0].click().run()
    assert [e.value for e in at.error] == [text("pw_wrong")] and "class" not in at.query_params
    at.text_input[0].input("tulipanes 7")
    at.button[0].click().run()
    assert not at.exception and at.error == [] and not at.main.text_input
    assert text("dataset") in [h.value for h in at.header]  # the home page, at last
    kept = at.query_params["class"]
    assert kept == access.token() and "tulipanes" not in kept

    again = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    again.query_params["class"] = kept  # a refresh: a new session, the same URL
    again.run()
    assert text("dataset") in [h.value for h in again.header] and not again.main.text_input
    forged = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    forged.query_params["class"] = "0" * 32
    forged.run()
    assert forged.text_input and not forged.header


def test_without_a_class_password_nobody_is_asked(monkeypatch, tmp_path):
    from core import access

    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(tmp_path))
    monkeypatch.delenv(access.PASSWORD_ENV, raising=False)
    at = run_app()
    assert text("dataset") in [h.value for h in at.header] and not at.main.text_input


def test_a_plain_streamlit_run_is_private_and_shows_no_tracebacks():
    """Issue 18: the project's .streamlit/config.toml, as Streamlit itself reads it from the
    repository root: this computer only, and generic messages for unexpected errors."""
    import subprocess
    import sys

    code = ("from streamlit import config as c; c.get_config_options(force_reparse=True); "
            "print(c.get_option('server.address'), "
            "c.get_option('client.showErrorDetails'))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()  # fmt: skip
    assert out == ["localhost", "none"]
