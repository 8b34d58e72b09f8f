"""The English and Spanish text table, without Streamlit: shared by the pages (through
ui.i18n, which adds the session's language) and the Gradio classify tab."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

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
def table() -> dict:
    """Every assets/i18n/*.json merged (one file per page; keys must not repeat)."""
    merged: dict = {}
    for path in sorted((Path(__file__).parent.parent / "assets" / "i18n").glob("*.json")):
        part = json.loads(path.read_text())
        if repeated := merged.keys() & part.keys():
            raise ValueError(f"{path.name} repeats translation keys: {sorted(repeated)}")
        merged |= part
    return merged


def text(key: str, lang: str, **values) -> str:
    """The text of ``key`` in ``lang`` ("en" or "es"), with ``values`` filled in."""
    words = table()[key][lang]
    return words.format(**values) if values else words


def paper_source(source: str, lang: str) -> str:
    """Where a seed paper reported a number, in ``lang``: its words ("seed", "Table",
    "section", ...) are the catalogue's ``src_*`` entries, longest first."""
    if lang == "en":
        return source
    for english, word in _source_words():
        source = english.sub(word[lang], source)
    return source


@functools.cache
def _source_words() -> list[tuple[re.Pattern, dict]]:
    words = sorted((v for k, v in table().items() if k.startswith("src_")),
                   key=lambda v: -len(v["en"]))  # fmt: skip
    return [(re.compile(rf"\b{re.escape(w['en'])}\b"), w) for w in words]


DATASET_NAMES = {"digits (8x8, upscaled to 28x28)": "ds_digits"}  # core's name -> its key


def dataset_name(name: str, lang: str) -> str:
    """A dataset's name as people read it in ``lang`` (a photo folder keeps its own)."""
    return text(DATASET_NAMES[name], lang) if name in DATASET_NAMES else name


def class_name(name: str, lang: str) -> str:
    """A dataset class name in ``lang`` (Fashion-MNIST's are translated; others stay)."""
    return CLASS_NAMES_ES.get(name, name) if lang == "es" else name


# Names people choose (class folders, runs) are text wherever they are shown: in Markdown
# through ``plain``; in HTML (a gallery, Plotly's labels, which render <a>, <b>, <br>...)
# through html.escape, which also keeps an old run's stored names harmless.
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # ASCII punctuation: Markdown syntax
_BARE_LINK = re.compile(r"(?i)(?=www\\\.)|(?<=[:@])")  # where GFM links an address in text


def plain(words: str) -> str:
    """``words`` as Markdown shows them, literally: every ASCII punctuation mark escaped
    (no link, image, tag, emphasis or Streamlit directive such as :red[...]), and an
    invisible word joiner where GitHub's Markdown would still link a bare address (after
    "http:" or "@", before "www."): it finds those in the text once escapes are undone."""
    return _BARE_LINK.sub("\u2060", _PUNCTUATION.sub(r"\\\1", words))


DASH = "—"  # what a table or a label shows for a value that does not exist
SEPARATORS = {"en": (",", "."), "es": (".", ",")}  # (thousands, decimal)


def number(value, lang: str, digits: int = 0) -> str:
    """``value`` written as ``lang`` writes numbers: 60,000 / 0.9012 in English, 60.000 /
    0,9012 in Spanish; None (or NaN) as a dash."""
    if value is None or value != value:
        return DASH
    thousands, decimal = SEPARATORS[lang]
    english = f"{value:,.{digits}f}"
    return english.translate({ord(","): thousands, ord("."): decimal})


def cell(value, lang: str, digits: int = 4) -> str:
    """One table cell: text as it is, a whole number without decimals, any other number
    with ``digits`` decimals, a missing value as a dash."""
    if value is None or isinstance(value, bool | str):
        return DASH if value is None else str(value)
    try:
        number_ = float(value)
    except (TypeError, ValueError):
        return str(value)
    whole = number_.is_integer() and abs(number_) >= 1
    return number(number_, lang, 0 if whole else digits)


def percent(value, lang: str, digits: int = 1) -> str:
    """A fraction as a percentage: 0.9123 -> 91.2% (91,2 % in Spanish)."""
    if value is None or value != value:
        return DASH
    return number(100 * value, lang, digits) + ("\u00a0%" if lang == "es" else "%")


def run_label(meta: dict, lang: str = "en", name: str | None = None) -> str:
    """One line naming a stored run: its name (when someone gave it one) · model · dataset ·
    test accuracy (or MSE for an autoencoder) · epochs · id."""
    test = meta["test"]
    score = (f"mse {number(test['mse'], lang, 4)}" if "mse" in test
             else f"{text('acc_short', lang)} {number(test['accuracy'], lang, 3)}")  # fmt: skip
    parts = [
        meta["model"],
        dataset_name(meta["dataset"]["name"], lang),
        score,
        f"{len(meta['history']['epoch'])} {text('epochs_short', lang)}",
        meta["run_id"][:6],
    ]
    return " · ".join([name, *parts] if name else parts)  # fmt: skip
