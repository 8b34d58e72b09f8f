"""Config widgets made from the config schema (core.schema): one call draws a field's widget
with its label and help in the page's language, its bounds or choices, and returns the
value as the config holds it."""

from __future__ import annotations

import hashlib

import streamlit as st

from core import UserError
from core.schema import Field, parse_sizes
from ui.i18n import decimal_slider, lang, rate, t

BAD = object()  # what field_widget returns for text it cannot read (it said why, beneath)


def spoken(values: list[float]) -> dict[float, str]:
    """How a slider of rates writes each one, made now (Streamlit may format options outside
    the run, where the session's language is unknown): 0 is "off"."""
    return {v: rate(v) if v else t("tr_off") for v in values}


def field_widget(f: Field, value, key: str, high: float | None = None, slider: bool = False,
                 where=st):  # fmt: skip
    """``f``'s widget in ``where``, opened on ``value`` (offered even when it is none of the
    usual steps); returns the value picked, or ``BAD`` for text it cannot read (the reason
    is shown under the widget, and the widgets after it keep their values).

    The kind decides the widget: a bool is a checkbox; a choice a selectbox (the choices
    named in the page's language); layer sizes a text box ("50,50", "3x75"; empty: the
    model's own); a field with steps a select slider of them (rates written as rates), or a
    selectbox with "automatic" first when None is a value; a float a slider of decimals; an
    int a number box, or a slider with ``slider``. ``high`` narrows the schema's upper bound
    to what the page offers."""
    language = lang()
    label, help_text = f.label(language), f.help(language)
    top = f.high if high is None else high
    if f.kind == "bool":
        return where.checkbox(label, value, help=help_text, key=key)
    if f.kind == "choice":
        words = {c: f.choice_label(c, language) for c in f.choices}  # made now, as spoken()
        return where.selectbox(label, f.choices, index=f.choices.index(value),
                               format_func=words.get, help=help_text, key=key)  # fmt: skip
    if f.kind == "sizes":
        text = where.text_input(label, ",".join(map(str, value or ())), help=help_text, key=key)
        try:
            return parse_sizes(text, f.words) if text.strip() else None
        except UserError:  # said under the box; the widgets after it are still drawn
            where.error(t(f"tr_bad_{f.name}"))
            return BAD
    if f.kind == "stages":  # stage numbers: "2" or "2,3"; empty: none
        text = where.text_input(label, ",".join(map(str, value or ())), help=help_text, key=key,
                                placeholder=t("tr_no_stages"))  # fmt: skip
        try:
            return f.parse(text) or None
        except UserError:
            where.error(t("tr_bad_stage_numbers"))
            return BAD
    if f.steps and f.optional:
        auto = t("tr_auto")
        options = [auto, *f.steps]
        picked = where.selectbox(label, options, help=help_text, key=key,
                                 index=options.index(value) if value in options else 0)  # fmt: skip
        return None if picked == auto else int(picked)
    if f.steps:
        options = sorted({*f.steps, value})
        words = spoken(options).get if f.log else None
        more = {"format_func": words} if words else {}
        return where.select_slider(label, options, value, help=help_text, key=key, **more)
    if f.kind == "float":
        return decimal_slider(where, label, float(f.low), float(top), float(value),
                              help=help_text, key=key)  # fmt: skip
    if f.kind == "int" and slider:
        return where.slider(label, int(f.low), max(int(top), value), value, help=help_text,
                            key=key)  # fmt: skip
    if f.kind == "int":
        return int(where.number_input(label, int(f.low), int(top), value, help=help_text,
                                      key=key))  # fmt: skip
    return where.text_input(label, value or "", help=help_text, key=key)


def spoken_select(where, label: str, options: list, words: dict, key: str, **more):
    """A selectbox whose options are named in the page's language (``words``): the widget's
    own key carries the language and the options, so a language switch or new options draw a
    new widget (the browser otherwise keeps showing an unchanged pick's old label); the pick
    itself is kept under ``key`` and survives both."""
    spoken = [str(words[o]) for o in options]
    version = hashlib.sha1(repr((lang(), [str(o) for o in options], spoken)).encode()).hexdigest()
    kept = st.session_state.get(key)
    index = options.index(kept) if kept in options else 0
    picked = where.selectbox(label, options, index=index, format_func=words.get,
                             key=f"{key}__{version[:10]}", **more)  # fmt: skip
    st.session_state[key] = picked
    return picked
