"""English and Spanish labels for the pages: ``t("key", **values)``."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from pandas.io.formats.style import Styler

from ui import text as _text
from ui.text import LANGUAGES


def lang() -> str:
    return st.session_state.get("lang", "en")


def t(key: str, **values) -> str:
    return _text.text(key, lang(), **values)


def num(value, digits: int = 0) -> str:
    """A number with the session language's separators (0.9012 / 0,9012); None: a dash."""
    return _text.number(value, lang(), digits)


def rate(value: float) -> str:
    """A rate or a penalty as people write one, short: 0.001, 1e-05, 10 (0,001 in Spanish)."""
    return f"{value:g}".replace(".", _text.SEPARATORS[lang()][1])


def decimal_slider(where, label: str, lo: float, hi: float, value: float, step: float = 0.05,
                   **kwargs) -> float:  # fmt: skip
    """A slider of decimals from ``lo`` to ``hi`` written in the session's language
    (Streamlit's own slider writes 0.40 in any language); ``value`` is always offered."""
    values = sorted({round(lo + i * step, 6) for i in range(round((hi - lo) / step) + 1)}
                    | {value})  # fmt: skip
    words = {v: num(v, 2) for v in values}  # made now: Streamlit may format outside the run
    return where.select_slider(label, values, value, format_func=words.get, **kwargs)


def pct(value, digits: int = 1) -> str:
    """A fraction as a percentage in the session's language (91.2% / 91,2 %)."""
    return _text.percent(value, lang(), digits)


def styled(frame: pd.DataFrame, digits: int = 4) -> Styler:
    """A table as st.dataframe should show it: whole numbers without decimals (1,797 or
    1.797), other numbers with ``digits`` decimals, both with the language's separators,
    and a dash where a value is missing. The values stay numbers (columns sort as such)."""
    language = lang()
    return frame.style.format(lambda v: _text.cell(v, language, digits))


def described(key: str, english: str) -> str:
    """A text core writes in English (a model's or a preset's summary, a paper's table):
    as it is in English, its translation (``key`` in the catalogue) in Spanish."""
    return english if lang() == "en" else _text.text(key, lang())


def model_summary(name: str) -> str:
    from core import models

    return described(f"model_{name}", models.get(name).summary)


def preset_summary(name: str) -> str:
    from core import presets

    return described(f"preset_{name}", presets.get(name).summary)


def paper_source(source: str) -> str:
    """Where a seed paper reported a number ("seed 000, Table 1"), in the session's language."""
    return _text.paper_source(source, lang())


def dataset_name(name: str) -> str:
    return _text.dataset_name(name, lang())


def class_name(name: str) -> str:
    return _text.class_name(name, lang())


def renamed_folders(pairs) -> str:
    """A Markdown line: which class folders are shown under another name ((folder, class)
    pairs, a dataset listing's ``renamed``), both names written as they are."""
    shown = "; ".join(f"{_text.plain(repr(old))} → {_text.plain(repr(new))}" for old, new in pairs)
    return t("data_renamed", names=shown)


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
