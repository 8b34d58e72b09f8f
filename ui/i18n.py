"""English and Spanish labels for the pages: ``t("key", **values)``."""

from __future__ import annotations

import streamlit as st

from ui import text as _text
from ui.text import LANGUAGES


def lang() -> str:
    return st.session_state.get("lang", "en")


def t(key: str, **values) -> str:
    return _text.text(key, lang(), **values)


def class_name(name: str) -> str:
    return _text.class_name(name, lang())


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
