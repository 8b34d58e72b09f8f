"""The teacher's assignments: a small JSON or YAML file of exercises for the class.

Each assignment fixes a run's settings (a preset, then fixed fields) and names the fields
students may change; students see it on the Train page, their runs are tagged with it, and
the class board filters by it. The file::

    assignments:
      - id: cnn-vs-mlp                       # letters, digits and dashes
        title: {en: "CNN against MLP", es: "CNN frente a MLP"}   # or one text for both
        brief: {en: "...", es: "..."}        # what to do (optional)
        hand_in: {en: "...", es: "..."}      # what to hand in (optional)
        preset: seed000-cnn                  # start from (optional; default: the defaults)
        fixed: {epochs: 5, batch_size: 64}   # then these (optional)
        free: [model, hidden, lr]            # what students may change
        models: [cnn_bn, mlp]                # when model is free, the families offered

Every value is checked as the command line checks it (core.schema): a bad file is one line
naming the assignment and the field, and nothing of it is kept. Examples ship in
``assets/assignments/``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from core import UserError, presets, schema
from core.config import RunConfig, from_dict, to_dict
from core.models import catalog

MAX_BYTES = 64 * 1024  # an assignment file is a page of text
MAX_ASSIGNMENTS = 20
MAX_TEXT = 2000  # characters of a brief or a hand-in
MAX_TITLE = 80
LANGS = ("en", "es")
EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "assignments"
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_KEYS = {"id", "title", "brief", "hand_in", "preset", "fixed", "free", "models"}


@dataclass(frozen=True)
class Assignment:
    id: str
    title: dict[str, str]
    brief: dict[str, str]
    hand_in: dict[str, str]
    config: RunConfig  # the preset's, then the fixed fields
    free: tuple[str, ...]  # schema field names students may change ("name": the model)
    models: tuple[str, ...]  # the families offered when the model is free (all: empty)

    def text(self, what: str, lang: str) -> str:
        """``title``, ``brief`` or ``hand_in`` in ``lang``, else in the other language."""
        words = getattr(self, what)
        return words.get(lang) or next((w for w in words.values() if w), "")

    def model_choices(self) -> tuple[str, ...]:
        if "name" not in self.free:
            return (self.config.model.name,)
        return self.models or tuple(f.name for f in catalog.families())

    def free_fields(self, model_name: str) -> list[schema.Field]:
        """The fields a student may change, for ``model_name``'s form (a model option that
        family does not read is left out), model first, in schema order."""
        reads = set(catalog.family(model_name).options)
        return [f for f in schema.FIELDS_LIST if f.name in self.free
                and (f.section != "model" or f.name == "name" or f.name in reads)]  # fmt: skip

    def locked(self, cfg: RunConfig) -> list[tuple[schema.Field, object]]:
        """The settings a student cannot change, with their values in ``cfg`` (an enforced
        config): the dataset, the model when fixed, its options, and the training fields that
        decide the result."""
        reads = set(catalog.family(cfg.model.name).options)
        shown = {"dataset", "name", *reads, *SHOWN_TRAIN}
        default = RunConfig()

        def fixed(f) -> bool:  # shown, or set by the teacher away from its default
            return f.name in shown or schema.value(cfg, f) != schema.value(default, f)

        return [(f, schema.value(cfg, f)) for f in schema.FIELDS_LIST
                if f.name not in self.free and fixed(f)]  # fmt: skip

    def enforce(self, cfg: RunConfig) -> RunConfig:
        """The assignment's config with only the free fields taken from ``cfg``: whatever a
        page sends, the locked fields are the teacher's (UserError for a model not offered)."""
        out = self.config
        for name in self.free:
            f = schema.field(name)
            out = schema.with_value(out, f, schema.value(cfg, f))
        if out.model.name not in self.model_choices():
            raise UserError(f"this assignment offers the models {', '.join(self.model_choices())}"
                            f" (got {out.model.name})")  # fmt: skip
        return schema.validate(out)

    def to_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "brief": self.brief,
                "hand_in": self.hand_in, "config": to_dict(self.config),
                "free": list(self.free), "models": list(self.models)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> Assignment:
        return cls(d["id"], d["title"], d["brief"], d["hand_in"], from_dict(d["config"]),
                   tuple(d["free"]), tuple(d["models"]))  # fmt: skip


# The training fields a locked list shows (others stay at their defaults, unless fixed).
SHOWN_TRAIN = ("epochs", "batch_size", "lr", "optimizer", "schedule", "weight_decay",
               "label_smoothing", "jitter", "hflip", "seed", "train_limit")  # fmt: skip


# What students may not be given: where data is read from (a free path would open any folder
# on the server), the run an encoder starts from, and where it trains.
NEVER_FREE = {"dataset", "data_dir", "encoder", "device"}
MAX_DEPTH = 20  # nesting of lists and maps an assignment file needs: 4


def _may_be_free(f: schema.Field) -> bool:
    """Whether a page can offer ``f`` to students: a widget that holds every value it may
    take (an optional number without steps has no widget for "none")."""
    if f.name == "name":  # the model: a picker of the families offered
        return True
    if f.name in NEVER_FREE or f.kind == "str":
        return False
    # A model option's "none" is its family's default, which the form starts from.
    return f.section == "model" or not (f.optional and f.kind in ("int", "float") and not f.steps)


def parse(data: bytes, name: str = "assignments") -> list[Assignment]:
    """The assignments of a JSON or YAML file's bytes (UserError, one line, for anything
    else)."""
    if len(data) > MAX_BYTES:
        raise UserError(f"{name}: an assignment file is at most {MAX_BYTES // 1024} KB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{name}: not a text file (UTF-8)") from None
    if _depth(text) > MAX_DEPTH:
        raise UserError(f"{name}: nested more than {MAX_DEPTH} levels deep")
    try:
        doc = _read(text, name)
    except (RecursionError, ValueError) as e:  # ValueError: a number too long to read
        if isinstance(e, UserError):
            raise
        raise UserError(f"{name}: neither JSON nor YAML that can be read") from None
    items = doc.get("assignments") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise UserError(f"{name}: expected a list under 'assignments:' (see assets/assignments/)")
    if len(items) > MAX_ASSIGNMENTS:
        raise UserError(f"{name}: at most {MAX_ASSIGNMENTS} assignments (got {len(items)})")
    out = [_assignment(item, i + 1) for i, item in enumerate(items)]
    ids = [a.id for a in out]
    if len(set(ids)) != len(ids):
        raise UserError(f"{name}: two assignments have the id {_first_repeat(ids)!r}")
    return out


def examples() -> dict[str, Path]:
    """The example files shipped with the app, by file name."""
    return {p.name: p for p in sorted(EXAMPLES.glob("*.y*ml")) + sorted(EXAMPLES.glob("*.json"))}


def dumps(items: list[Assignment]) -> str:
    return json.dumps([a.to_dict() for a in items], ensure_ascii=False)


def loads(text: str) -> list[Assignment]:
    """Assignments as ``dumps`` kept them (already checked when they were loaded)."""
    return [Assignment.from_dict(d) for d in json.loads(text)]


# -- reading one -----------------------------------------------------------------------------
def _read(text: str, name: str):
    """JSON, else YAML (safe: plain data only, and no aliases, so a small file cannot
    unfold into a huge one)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    import yaml

    try:
        if any(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise UserError(f"{name}: YAML aliases (*name) are not allowed here")
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise UserError(f"{name}: neither JSON nor YAML{line}") from None


def _assignment(item, number: int) -> Assignment:
    if not isinstance(item, dict):
        raise UserError(f"assignment {number}: expected fields like id, title, free")
    label = f"assignment {number}"
    if unknown := sorted(set(map(str, item)) - _KEYS):
        raise UserError(
            f"{label}: unknown field {unknown[0]!r}; fields: {', '.join(sorted(_KEYS))}"
        )
    aid = item.get("id")
    if not isinstance(aid, str) or not _ID.fullmatch(aid):
        raise UserError(f"{label}: id must be 1-40 lowercase letters, digits or dashes "
                        f"(got {aid!r})")  # fmt: skip
    label = f"assignment {aid!r}"
    title = _words(item.get("title"), f"{label}: title", MAX_TITLE, required=True)
    brief = _words(item.get("brief"), f"{label}: brief", MAX_TEXT)
    hand_in = _words(item.get("hand_in"), f"{label}: hand_in", MAX_TEXT)
    try:
        preset = item.get("preset")
        cfg = presets.get(str(preset)).config if preset is not None else RunConfig()
        fixed = item.get("fixed") or {}
        if not isinstance(fixed, dict):
            raise UserError("fixed must map fields to values, like {epochs: 5}")
        for key, value in fixed.items():
            f = schema.field(str(key))
            cfg = schema.with_value(cfg, f, f.parse(_as_text(value)))
        free = item.get("free") or []
        if not isinstance(free, list):
            raise UserError("free must be a list of field names, like [lr, epochs]")
        free = tuple(dict.fromkeys(schema.field(str(n)).name for n in free))
        if barred := [n for n in free if not _may_be_free(schema.FIELDS[n])]:
            raise UserError(f"students cannot be given {barred[0]} to change (fix it instead)")
        models = item.get("models") or []
        if not isinstance(models, list):
            raise UserError("models must be a list of model names")
        models = tuple(dict.fromkeys(map(str, models)))
        for m in (cfg.model.name, *models):
            catalog.family(m)  # UserError naming the families for an unknown one
        if models and "name" not in free:
            raise UserError("models lists the models offered: add model to free")
        if models and cfg.model.name not in models:
            cfg = schema.with_value(cfg, schema.field("name"), models[0])
        schema.validate(cfg)
    except UserError as e:
        raise UserError(f"{label}: {e}") from None
    return Assignment(aid, title, brief, hand_in, cfg, free, models)


def _words(value, where: str, limit: int, required: bool = False) -> dict[str, str]:
    """A text in both languages: one string for both, or {en: ..., es: ...}."""
    if value is None and not required:
        return {}
    if isinstance(value, str):
        value = {"en": value}
    if not isinstance(value, dict) or not any(isinstance(w, str) and w.strip()
                                              for w in value.values()):  # fmt: skip
        raise UserError(f"{where}: give a text, or {{en: ..., es: ...}}")
    out = {}
    for lang, words in value.items():
        if lang not in LANGS or not isinstance(words, str):
            raise UserError(f"{where}: languages are en and es, each a text")
        words = "".join(c for c in words if c.isprintable() or c == "\n").strip()
        if len(words) > limit:
            raise UserError(f"{where}: at most {limit} characters (got {len(words)})")
        out[lang] = words
    return out


def _as_text(value) -> str:
    """A YAML or JSON value as the command line would write it: [50, 50] -> "50,50"."""
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "none" if value is None else str(value)


def _first_repeat(ids: list[str]) -> str:
    seen: set[str] = set()
    return next(i for i in ids if i in seen or seen.add(i))


def _depth(text: str) -> int:
    """How deep brackets nest in ``text`` (quotes ignored: an over-count only refuses a file
    sooner); block-style YAML nests by indentation, which 64 KB keeps shallow enough."""
    depth = deepest = 0
    for c in text:
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(0, depth - 1)
    return deepest
