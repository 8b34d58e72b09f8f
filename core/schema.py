"""The config schema: one ``Field`` per config field, the one description of every knob.

From it come the command line's flags (core.cli), the fields a sweep may vary and how their
values are written (core.sweep), the checks every run passes (``validate``), and the Train
page's widgets (ui.widgets). A field knows its section (data, model or train), its kind,
its bounds or choices, its label and help in English and Spanish (``assets/i18n/config.json``:
``cfg_<name>``, ``cfg_help_<name>``, ``cfg_<name>_<choice>``), and for model options which
model families read it (core.models.catalog, where each family's options live).

Bounds are what a classroom run can use: beyond them a typo (epochs=1000000000,
hidden=1000000000x1) would allocate gigabytes or never end. The size of the built model and
its training memory are bounded apart, in core.runs (caps on parameters and on memory).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from core import UserError
from core.config import DataConfig, ModelConfig, RunConfig, TrainConfig

SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
MAX_LAYERS = 8  # dense hidden layers, or conv stages
MAX_SEED = 2**31 - 1
NONE = ("none", "-", "")  # how people write "no value": an optional field's default
TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
TEXTS = Path(__file__).resolve().parent.parent / "assets" / "i18n" / "config.json"

KINDS = ("int", "float", "bool", "choice", "sizes", "stages", "str")
# int, float: a number within [low, high] (``open_low``/``open_high``: the bound excluded);
# bool; choice: one of ``choices``; sizes: layer sizes as "100", "50,50" or "3x75" (seed
# 002's notation), each within [low, high]; stages: stage numbers "2,3" (from 1; "none":
# none); str: text (a dataset, a folder, a run id).


@dataclass(frozen=True)
class Field:
    section: str
    name: str
    kind: str
    words: str  # the field in an English sentence: "batch size" (messages, CLI help)
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    unit: str = ""  # " pixels": after a bound in a message
    choices: tuple[str, ...] = ()
    log: bool = False  # a rate: offered on a log scale (0.0001 ... 1)
    steps: tuple = ()  # the values a page offers (a select slider's), when not a range
    flag: bool = True  # a command-line flag of its own (false: one a command sets)

    @property
    def qualified(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def optional(self) -> bool:
        """Whether None is a value: "the model's (or the source's) own"."""
        return "None" in str(SECTIONS[self.section].__dataclass_fields__[self.name].type)

    @property
    def families(self) -> tuple[str, ...] | None:
        """The model families that read this model option (None: not a model option)."""
        if self.section != "model":
            return None
        from core.models import catalog

        return catalog.using(self.name)

    def label(self, lang: str) -> str:
        return _texts()[f"cfg_{self.name}"][lang]

    def help(self, lang: str) -> str:
        return _texts()[f"cfg_help_{self.name}"][lang]

    def choice_label(self, choice: str, lang: str) -> str:
        return _texts().get(f"cfg_{self.name}_{choice}", {}).get(lang, choice)

    # -- values --------------------------------------------------------------------------
    def parse(self, text: str):
        """The value ``text`` stands for (UserError naming the field when it cannot)."""
        text = str(text).strip()
        if self.optional and text.lower() in NONE and self.kind != "stages":
            return None
        try:
            if self.kind == "sizes":
                return parse_sizes(text, self.words)
            if self.kind == "stages":
                return () if text.lower() in NONE else tuple(int(p) for p in text.split(","))
            if self.kind == "bool":
                if text.lower() not in TRUE + FALSE:
                    raise ValueError
                return text.lower() in TRUE
            if self.kind == "int":
                return int(text)
            if self.kind == "float":
                return float(text)
        except UserError:
            raise
        except ValueError:
            raise UserError(f"{self.words}: cannot read {text!r} as {self._written()}") from None
        if self.kind == "choice" and text not in self.choices:
            self.check(text)
        return text

    def _written(self) -> str:
        return {"sizes": "layer sizes like 100, 50,50 or 3x75",
                "stages": "stage numbers like 2 or 2,3", "bool": "yes or no",
                "int": "a whole number", "float": "a number"}.get(self.kind, "text")  # fmt: skip

    def check(self, value) -> None:
        """Raise UserError with one clear line when ``value`` is out of this field's range."""
        if value is None and self.optional:
            return
        if self.kind in ("int", "float"):
            self._check_number(self.words, value)
        elif self.kind == "choice" and value not in self.choices:
            raise UserError(f"unknown {self.words} {value!r}; choose from "
                            f"{', '.join(self.choices)}")  # fmt: skip
        elif self.kind == "sizes":
            if not value or len(value) > MAX_LAYERS:
                count = len(value) if value is not None else 0
                raise UserError(f"give 1 to {MAX_LAYERS} {self.words} (got {count})")
            for size in value:
                self._check_number(f"a {self.words[:-1]}'s size", size)

    def _check_number(self, words: str, value) -> None:
        low, high = self.low, self.high
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
        ok = ok and (low < value if self.open_low else low <= value)
        ok = ok and (value < high if self.open_high else value <= high)
        if ok:
            return
        if self.open_low or self.open_high:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            raise UserError(f"{words} must be in {left}{low:g}, {high:g}{right} (got {value})")
        raise UserError(f"{words} must be between {low:g} and {high:g}{self.unit} (got {value})")


def _f(section, name, kind, words, low=None, high=None, **more) -> Field:
    return Field(section, name, kind, words, low, high, **more)


BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024)
# 10 is far enough to watch a run diverge (the help says so); beyond it nothing new is seen.
LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 4e-3, 1e-2, 3e-2, 1e-1, 1.0, 10.0)
PENALTIES = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)  # L1 / L2 weights offered (0: off)

FIELDS_LIST: tuple[Field, ...] = (
    # data
    _f("data", "dataset", "str", "dataset"),
    _f("data", "data_dir", "str", "data folder"),
    _f("data", "val_size", "int", "validation size", 1, 10_000_000, unit=" images"),
    _f("data", "split_seed", "int", "split seed", 0, MAX_SEED),
    _f("data", "train_limit", "int", "train limit", 1, 10_000_000, unit=" images"),
    _f("data", "image_size", "int", "image size", 8, 512, unit=" pixels"),
    # model: the family's name is --model (a command sets it), then the families' options
    _f("model", "name", "str", "model", flag=False),
    _f("model", "hidden", "sizes", "hidden layers", 1, 4096, unit=" units"),
    _f("model", "dropout", "float", "dropout", 0, 1, open_high=True),
    _f("model", "width", "int", "width", 1, 1024, unit=" channels"),
    _f("model", "latent", "int", "latent size", 1, 4096, unit=" units"),
    _f("model", "pooling", "bool", "pooling"),
    _f("model", "encoder", "str", "encoder run"),
    _f("model", "encoder_mode", "choice", "encoder mode", choices=("finetune", "frozen", "random")),
    _f("model", "stages", "sizes", "conv stages", 1, 1024, unit=" channels"),
    _f("model", "kernel", "int", "kernel", 1, 15, unit=" pixels"),
    _f("model", "no_relu", "stages", "no relu"),
    _f("model", "no_pool", "stages", "no pool"),
    _f("model", "skip", "stages", "skip"),
    _f("model", "tune", "choice", "tune mode", choices=("frozen", "top", "all")),
    _f("model", "resolution", "int", "resolution", 32, 512, unit=" pixels",
       steps=(96, 128, 160, 192, 224, 256, 288, 320)),
    # train
    _f("train", "epochs", "int", "epochs", 1, 500),
    _f("train", "batch_size", "int", "batch size", 1, 4096, steps=BATCH_SIZES),
    _f("train", "lr", "float", "learning rate", 0, 1e4, open_low=True, log=True,
       steps=LEARNING_RATES),
    _f("train", "optimizer", "choice", "optimizer", choices=("adamw", "adam", "sgd", "nesterov")),
    _f("train", "momentum", "float", "momentum", 0, 1, open_high=True),
    _f("train", "weight_decay", "float", "weight decay", 0, 100),
    _f("train", "l1", "float", "l1", 0, 100, log=True, steps=PENALTIES),
    _f("train", "l2", "float", "l2", 0, 100, log=True, steps=PENALTIES),
    _f("train", "label_smoothing", "float", "label smoothing", 0, 1, open_high=True),
    _f("train", "schedule", "choice", "schedule",
       choices=("onecycle", "constant", "step", "cosine", "plateau")),
    _f("train", "step_size", "int", "step size", 1, 1000, unit=" epochs"),
    _f("train", "gamma", "float", "gamma", 0, 1, open_low=True),
    _f("train", "plateau_patience", "int", "plateau patience", 0, 1000, unit=" epochs"),
    _f("train", "early_stopping", "int", "early stopping", 0, 1000, unit=" epochs"),
    _f("train", "jitter", "int", "jitter", 0, 64, unit=" pixels"),
    _f("train", "hflip", "bool", "horizontal flip"),
    _f("train", "oversample", "bool", "oversampling"),
    _f("train", "seed", "int", "seed", 0, MAX_SEED),
    _f("train", "bf16", "choice", "bf16", choices=("auto", "on", "off")),
    _f("train", "device", "choice", "device", choices=("auto", "cpu", "cuda")),
)  # fmt: skip

FIELDS: dict[str, Field] = {f.name: f for f in FIELDS_LIST}


def field(name: str) -> Field:
    """The field ``name`` ("lr", or qualified: "train.lr"; "model" is the family's name)."""
    name = {"model": "name"}.get(name, name)
    bare = name.split(".", 1)[-1]
    found = FIELDS.get(bare)
    if found is None or ("." in name and found.qualified != name):
        known = ", ".join(sorted(f.name for f in FIELDS_LIST if f.name != "name"))
        raise UserError(f"no config field {name!r}; fields: model, {known}")
    return found


def model_fields(model_name: str) -> list[Field]:
    """The options model family ``model_name`` reads, in schema order."""
    from core.models import catalog

    options = catalog.family(model_name).options
    return [f for f in FIELDS_LIST if f.section == "model" and f.name in options]


def show(value) -> str:
    """A value as ``Field.parse`` reads it back: (50, 50) -> "50,50", () -> "none"."""
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def value(cfg: RunConfig, f: Field):
    return getattr(getattr(cfg, f.section), f.name)


def with_value(cfg: RunConfig, f: Field, new) -> RunConfig:
    section = getattr(cfg, f.section)
    return replace(cfg, **{f.section: replace(section, **{f.name: new})})


def parse_sizes(text: str, what: str = "hidden layers") -> tuple[int, ...]:
    """Layer sizes as people write them: "100", "50,50", "3x75" (seed 002's notation for
    75,75,75). The count is bounded before anything is expanded (``1000000000x1`` is one
    line, not a billion-element list); the sizes are bounded by ``validate``."""
    parts = [p for p in text.replace(" ", "").split(",") if p]
    counts, sizes = [], []
    try:
        for part in parts:
            count, _, size = part.rpartition("x")
            counts.append(int(count) if count else 1)
            sizes.append(int(size))
    except ValueError:
        raise UserError(f"layer sizes look like 100, 50,50 or 3x75 (got {text!r})") from None
    if any(c < 1 for c in counts):
        raise UserError(f"a repeat count must be at least 1 (got {text!r})")
    if not parts or sum(counts) > MAX_LAYERS:
        raise UserError(f"give 1 to {MAX_LAYERS} {what} (got {sum(counts)})")
    return tuple(size for count, size in zip(counts, sizes, strict=True) for _ in range(count))


def validate(cfg: RunConfig) -> RunConfig:
    """Raise UserError with one clear line for any value a run cannot use (each field's
    bounds, then the rules that tie two fields together); returns ``cfg``."""
    for f in FIELDS_LIST:
        f.check(value(cfg, f))
    d, t, m = cfg.data, cfg.train, cfg.model
    if d.image_size is not None and t.jitter > d.image_size // 2:
        raise UserError(f"jitter must be at most half the image side, {d.image_size // 2} "
                        f"pixels (got {t.jitter})")  # fmt: skip
    if m.kernel is not None and m.kernel % 2 == 0:
        raise UserError(f"kernel must be an odd number of pixels (got {m.kernel})")
    count = len(m.stages) if m.stages is not None else 4  # cnn_stages' default: 4 stages
    for name in ("no_relu", "no_pool", "skip"):
        stages = getattr(m, name) or ()
        if any(not 1 <= s <= count for s in stages):
            raise UserError(f"{name.replace('_', ' ')}: stages are numbered 1 to {count} "
                            f"(got {list(stages)})")  # fmt: skip
    if m.skip and len(set(m.skip)) >= count:
        raise UserError("skip removes every stage: keep at least one")
    return cfg


@functools.cache
def _texts() -> dict:
    return json.loads(TEXTS.read_text(encoding="utf-8"))


def _check_complete() -> None:
    """Every field of the config dataclasses is described here (a test calls this)."""
    described = {f.qualified for f in FIELDS_LIST}
    declared = {f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    if described != declared:
        raise AssertionError(f"schema and config differ: {sorted(described ^ declared)}")


__all__ = ["FIELDS", "FIELDS_LIST", "Field", "field", "model_fields", "parse_sizes", "show",
           "validate", "value", "with_value"]  # fmt: skip
