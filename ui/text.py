"""The English and Spanish text table, without Streamlit: shared by the pages (through
ui.i18n, which adds the session's language) and the Gradio classify tab."""

from __future__ import annotations

import functools
import json
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


def class_name(name: str, lang: str) -> str:
    """A dataset class name in ``lang`` (Fashion-MNIST's are translated; others stay)."""
    return CLASS_NAMES_ES.get(name, name) if lang == "es" else name


def run_label(meta: dict) -> str:
    """One line naming a stored run: model · dataset · test accuracy (or MSE for an
    autoencoder) · epochs · id."""
    test = meta["test"]
    score = f"mse {test['mse']:.4f}" if "mse" in test else f"acc {test['accuracy']:.3f}"
    return (f"{meta['model']} · {meta['dataset']['name']} · {score} · "
            f"{len(meta['history']['epoch'])} ep · {meta['run_id'][:6]}")  # fmt: skip
