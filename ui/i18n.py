"""English and Spanish labels for the pages: ``t("key", **values)``."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import streamlit as st

LANGUAGES = {"en": "English", "es": "Español"}
CLASS_NAMES_ES = {
    "T-shirt/top": "Camiseta/top",
    "Trouser": "Pantalón",
    "Pullover": "Jersey",
    "Dress": "Vestido",
    "Coat": "Abrigo",
    "Sandal": "Sandalia",
    "Shirt": "Camisa",
    "Sneaker": "Zapatilla",
    "Bag": "Bolso",
    "Ankle boot": "Botín",
}


@functools.cache
def _table() -> dict:
    """Every assets/i18n/*.json merged (one file per page; keys must not repeat)."""
    table: dict = {}
    for path in sorted((Path(__file__).parent.parent / "assets" / "i18n").glob("*.json")):
        part = json.loads(path.read_text())
        if repeated := table.keys() & part.keys():
            raise ValueError(f"{path.name} repeats translation keys: {sorted(repeated)}")
        table |= part
    return table


def lang() -> str:
    return st.session_state.get("lang", "en")


def t(key: str, **values) -> str:
    text = _table()[key][lang()]
    return text.format(**values) if values else text


def class_name(name: str) -> str:
    return CLASS_NAMES_ES.get(name, name) if lang() == "es" else name


def language_picker() -> None:
    """The sidebar switch; the choice lives in the session and the URL (?lang=es)."""
    if "lang" not in st.session_state:
        st.session_state.lang = st.query_params.get("lang", "en")
        if st.session_state.lang not in LANGUAGES:
            st.session_state.lang = "en"
    st.sidebar.radio(
        "Language · Idioma", list(LANGUAGES), format_func=LANGUAGES.get, key="lang", horizontal=True
    )
    st.query_params["lang"] = st.session_state.lang
