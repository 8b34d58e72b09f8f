"""One run as a self-contained HTML report, to print or hand in (issue 20, items 6 and 7).

``build(store, run_id, lang)`` returns one HTML page that needs nothing else: its style is
inline, its charts are SVG drawn here, its pictures are PNG ``data:`` URIs, and a Content
Security Policy forbids it to load anything at all. It holds the run's title, its config,
its learning curves, the test scores (beside the seed paper's, where one reported them),
the confusion matrix, the per-class scores, the most confident mistakes and the run's
read-only link into the app. An autoencoder's report keeps the config, the curves and the
test MSE. Every text people chose (run, class and dataset names) is escaped: it is text.

``python -m core report RUN --out report.html`` writes it; so does the Evaluate page's
download button. Nothing here imports torch unless the run's test probabilities were never
saved (a run from before they were): then they are computed once, as the pages do.
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from urllib.parse import urlsplit

import numpy as np

from core import UserError, schema, tasks
from core.models import catalog
from ui.text import DASH, class_name, dataset_name, number, paper_source, percent, text

URL_ENV = "CNN_CLASSROOM_URL"  # the app's address as students open it (the report's link)
LOCAL_URL = "http://localhost:8501"  # make run's address
MISTAKES = 24  # pictures of the most confident mistakes
PICTURE = 96  # a small picture is enlarged (nearest neighbour) to at least this many pixels
MAX_PICTURE = 160  # a larger one (a photo) is shrunk to at most this many
TRAIN_COLOR, VAL_COLOR = "#1f5fa8", "#d9480f"
HIT, MISS = (31, 95, 168), (201, 42, 42)  # the confusion matrix's shades: right, wrong
SCORES = ("precision", "recall", "f1")
# Nothing may load: no script, no style sheet, font or picture from anywhere (data: only).
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def share_link(base: str, run_id: str, lang: str) -> str:
    """The read-only link to a run's Evaluate page at the app's address ``base``."""
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"the app's address must be an http(s) URL such as {LOCAL_URL}, "
                        f"not {base!r}")  # fmt: skip
    return f"{base.rstrip('/')}/evaluate?run={run_id}&lang={lang}"


def build(store, run_id: str, lang: str = "en", link: str | None = None, data=None,
          probs=None) -> str:  # fmt: skip
    """The report of run ``run_id`` in ``lang`` ("en" or "es") as one HTML page. ``link``:
    the run's share link (None: no link; an autoencoder's report has none, the Evaluate
    page shows classifiers); ``data`` and ``probs``: the run's dataset and test
    probabilities when the caller holds them (else they are read here)."""
    if lang not in ("en", "es"):
        raise UserError(f"the report's language is en or es, not {lang!r}")
    meta = store.meta(run_id)
    if meta is None:
        raise UserError(f"run {run_id} is damaged or missing (its files do not check out)")
    r = _Report(meta, lang, store.names().get(run_id))
    sections = [r.header(), r.config()]
    if not tasks.of(meta["model"]).has_accuracy:  # an autoencoder: nothing to classify
        sections += [r.autoencoder(), r.curves()]
        link = None
    else:
        sections += [r.summary(), r.curves(), r.confusion(), r.per_class(),
                     r.mistakes(store, data, probs)]  # fmt: skip
    sections.append(r.footer(link))
    return r.page("\n".join(sections))


def esc(value) -> str:
    return html.escape(str(value), quote=True)


class _Report:
    def __init__(self, meta: dict, lang: str, name: str | None):
        self.meta, self.lang, self.name = meta, lang, name
        self.classes = [class_name(c, lang) for c in meta.get("classes", [])]

    def t(self, key: str, **values) -> str:
        """The words of ``key`` in the report's language (not escaped: escape the result)."""
        return text(key, self.lang, **values)

    def num(self, value, digits: int = 4) -> str:
        return number(value, self.lang, digits)

    def dataset(self) -> str:
        return dataset_name(self.meta["dataset"]["name"], self.lang)

    def title(self) -> str:
        return self.name or f"{self.meta['model']} · {self.dataset()}"

    def section(self, name: str, title: str, body: str) -> str:
        return f'<section id="{name}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'

    def note(self, key: str, **values) -> str:
        return f'<p class="note">{esc(self.t(key, **values))}</p>'

    # -- the page --------------------------------------------------------------------------
    def page(self, body: str) -> str:
        title = esc(self.t("rp_doc_title", title=self.title()))
        return (
            f'<!DOCTYPE html>\n<html lang="{self.lang}">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
            f"{body}\n</main>\n</body>\n</html>\n"
        )

    def header(self) -> str:
        meta = self.meta
        created = meta.get("created")
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else DASH
        facts = [
            ("rp_fact_model", esc(meta["model"])),
            ("rp_fact_dataset", esc(self.dataset())),
            ("rp_fact_run", f"<code>{esc(meta['run_id'])}</code>"),
            ("rp_fact_date", when),
            ("rp_fact_epochs", self.num(len(meta["history"]["epoch"]), 0)),
            ("rp_fact_time", f"{self.num(meta.get('wall_seconds'), 1)} s"),
            ("rp_fact_test", self.num(meta["test"]["support"], 0)),
        ]
        cells = "".join(f"<div><dt>{esc(self.t(k))}</dt><dd>{v}</dd></div>" for k, v in facts)
        return (
            f'<header>\n<p class="kicker">{esc(self.t("rp_kicker"))}</p>\n'
            f'<h1>{esc(self.title())}</h1>\n<dl class="facts">{cells}</dl>\n</header>'
        )

    def config(self) -> str:
        """Three small tables (data, model, training): each field's label and value."""
        config = self.meta["config"]
        tables = []
        for section in ("data", "model", "train"):
            rows = "".join(
                f'<tr><th scope="row">{esc(f.label(self.lang))}</th>'
                f"<td>{esc(self.value(f, config))}</td></tr>"
                for f in self.fields(section)
            )
            caption = esc(self.t(f"rp_cfg_{section}"))
            tables.append(
                f'<table class="config"><caption>{caption}</caption><tbody>{rows}</tbody></table>'
            )
        return self.section(
            "config", self.t("rp_config"), f'<div class="cols3">{"".join(tables)}</div>'
        )

    def fields(self, section: str) -> list:
        """The fields of ``section`` worth reading: a model's own options, and the training
        settings its optimizer and schedule use."""
        config = self.meta["config"]
        train = config["train"]
        unused = {
            "data_dir": config["data"].get("data_dir") is None,
            "momentum": train.get("optimizer") not in ("sgd", "nesterov"),
            "step_size": train.get("schedule") != "step",
            "gamma": train.get("schedule") not in ("step", "plateau"),
            "plateau_patience": train.get("schedule") != "plateau",
        }
        if section == "model":
            try:
                found = [schema.FIELDS["name"], *schema.model_fields(self.meta["model"])]
            except UserError:  # a family this code no longer has: what the config holds
                found = [f for f in schema.FIELDS_LIST if f.section == "model"]
        else:
            found = [f for f in schema.FIELDS_LIST if f.section == section]
        return [f for f in found if f.name in config[section] and not unused.get(f.name)]

    def value(self, f, config: dict) -> str:
        """A config value as people read it: the dataset by its name, a value left to the
        data or the model family by what they chose, a choice by its label, numbers as the
        report's language writes them."""
        value = config[f.section][f.name]
        if f.qualified == "data.dataset":
            return self.dataset()
        if value is None and f.qualified == "data.train_limit":  # all of them: how many
            value = self.meta["dataset"]["sizes"].get("train")
        if value is None and f.qualified == "data.image_size":  # the source's own
            value = self.meta.get("input", {}).get("size")
        if value is None and f.section == "model" and f.name != "name":
            family = catalog.FAMILIES.get(self.meta["model"])
            value = family.options.get(f.name) if family else None
        if value is None or value == [] or value == ():
            return DASH
        if isinstance(value, bool):
            return self.t("rp_yes" if value else "rp_no")
        if isinstance(value, list | tuple):
            return ", ".join(self.num(v, 0) for v in value)
        if f.kind == "choice":
            return f.choice_label(value, self.lang)
        if isinstance(value, int):
            return str(value) if f.name in ("seed", "split_seed") else self.num(value, 0)
        if isinstance(value, float):
            return _short(value, self.lang)
        return str(value)

    # -- the results -----------------------------------------------------------------------
    def summary(self) -> str:
        test = self.meta["test"]
        cards = _cards([(self.t(key), self.num(test.get(score))) for key, score in (
            ("rp_accuracy", "accuracy"), ("rp_macro_f1", "macro_f1"),
            ("rp_top3", "top3_accuracy"), ("rp_auc", "roc_auc_macro"),
            ("rp_logloss", "log_loss"))])  # fmt: skip
        body = cards + self.note("rp_summary_help", n=self.num(test["support"], 0))
        paper = _paper(self.meta)
        if paper:
            source = paper_source(paper["source"], self.lang)
            words = self.t("rp_paper", source=source, acc=self.num(paper["accuracy"]),
                           ours=self.num(test["accuracy"]))  # fmt: skip
            body += f'<p class="paper">{esc(words[:1].upper() + words[1:])}</p>'
        return self.section("summary", self.t("rp_summary"), body)

    def autoencoder(self) -> str:
        card = _cards([(self.t("rp_mse"), self.num(self.meta["test"]["mse"]))])
        return self.section("summary", self.t("rp_summary"), card + self.note("rp_autoencoder"))

    def curves(self) -> str:
        h = self.meta["history"]
        train, val = self.t("rp_train"), self.t("rp_val")
        charts = []
        for title, key in (("rp_loss", "loss"), ("rp_accuracy_curve", "accuracy")):
            series = [(train, h.get(f"train_{key}") or [], TRAIN_COLOR, False),
                      (val, h.get(f"val_{key}") or [], VAL_COLOR, True)]  # fmt: skip
            charts.append(line_chart(self.t(title), self.t("rp_epoch"), h["epoch"], series,
                                     self.lang))  # fmt: skip
        body = f'<div class="cols2">{"".join(charts)}</div>'  # no accuracy: no chart ("")
        if self.meta.get("overfitting_epoch"):
            body += self.note("rp_overfit", epoch=self.meta["overfitting_epoch"])
        return self.section("curves", self.t("rp_curves"), body)

    def confusion(self) -> str:
        """Counts, each cell shaded by its share of its row (its true class): the diagonal
        blue (right), the rest red (wrong), so a reader sees where the mistakes go."""
        cm = np.asarray(self.meta["test"]["confusion_matrix"], dtype=np.int64)
        shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        names = [esc(c) for c in self.classes]
        rows = []
        for i, name in enumerate(names):
            cells = []
            for j in range(len(names)):
                rgb, kind = (HIT, "hit") if i == j else (MISS, "miss")
                alpha = 0.06 + 0.94 * float(shares[i, j])
                fill = f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{alpha:.3f})" if cm[i, j] else "none"
                ink = "#fff" if alpha > 0.55 else "#1b1b1b"
                cells.append(f'<td class="{kind}" style="background:{fill};color:{ink}">'
                             f"{self.num(int(cm[i, j]), 0)}</td>")  # fmt: skip
            rows.append(f'<tr><th scope="row">{name}</th>{"".join(cells)}</tr>')
        kind = " small" if len(names) > 12 else ""
        kind += " rotated" if max(map(len, self.classes), default=0) > 3 else ""
        corner = (f'<th class="corner"><span>{esc(self.t("rp_true"))} ↓</span>'
                  f'<span>{esc(self.t("rp_predicted"))} →</span></th>')  # fmt: skip
        head = "".join(f'<th scope="col"><span>{n}</span></th>' for n in names)
        table = (f'<div class="wide"><table class="cm{kind}"><thead><tr>{corner}{head}</tr>'
                 f"</thead><tbody>{''.join(rows)}</tbody></table></div>")  # fmt: skip
        note = self.note("rp_confusion_help", right=self.num(int(np.trace(cm)), 0),
                         n=self.num(int(cm.sum()), 0))  # fmt: skip
        return self.section("confusion", self.t("rp_confusion"), table + note)

    def per_class(self) -> str:
        test = self.meta["test"]
        heads = [self.t("rp_class"), *(self.t(f"rp_{s}") for s in SCORES), self.t("rp_support")]
        head = "".join(f'<th scope="col">{esc(h)}</th>' for h in heads)
        per_class = zip(self.classes, test["per_class"].values(), strict=True)
        rows = [self._score_row(name, [r[s] for s in SCORES], r["support"])
                for name, r in per_class]  # fmt: skip
        for avg, kind in (("macro", "avg first"), ("weighted", "avg")):
            rows.append(self._score_row(self.t(f"rp_{avg}_avg"),
                                        [test[f"{avg}_{s}"] for s in SCORES],
                                        test["support"], kind))  # fmt: skip
        table = (f'<table class="scores-table"><thead><tr>{head}</tr></thead>'
                 f"<tbody>{''.join(rows)}</tbody></table>")  # fmt: skip
        return self.section("per-class", self.t("rp_per_class"), table)

    def _score_row(self, name: str, scores: list, support: int, kind: str = "") -> str:
        cells = "".join(f"<td>{self.num(s)}</td>" for s in scores)
        attr = f' class="{kind}"' if kind else ""
        return (f'<tr{attr}><th scope="row">{esc(name)}</th>{cells}'
                f"<td>{self.num(support, 0)}</td></tr>")  # fmt: skip

    def mistakes(self, store, data, probs) -> str:
        """The MISTAKES test images the network got most wrong (the lowest probability for
        their true class, the highest loss), each with what it predicted and the truth."""
        title = self.t("rp_mistakes")
        try:
            data = data if data is not None else _dataset(self.meta)
            if probs is None:
                probs = store.test_probs(self.meta["run_id"])
            if probs is None:  # an older run: computed once and saved, as the pages do
                from core import runs

                probs = runs.test_probs(store, self.meta["run_id"], data=data)
        except (UserError, OSError, ValueError, KeyError):  # the data is not on this machine
            return self.section("mistakes", title, self.note("rp_no_images"))
        from core import metrics

        worst = metrics.misclassified(data.y_test, probs, MISTAKES)
        if not worst:
            return self.section("mistakes", title, self.note("rp_no_mistakes"))
        figures = []
        for m in worst:
            said = f"{self.classes[m['predicted']]} ({percent(m['p_predicted'], self.lang, 0)})"
            truth = self.t("rp_truth", cls=self.classes[m["true"]])
            figures.append(
                f'<figure><img src="{picture(data.x_test[m["index"]])}" alt="{esc(said)}">'
                f'<figcaption><span class="said">{esc(said)}</span>'
                f'<span class="truth">{esc(truth)}</span></figcaption></figure>'
            )
        gallery = f'<div class="gallery">{"".join(figures)}</div>'
        return self.section(
            "mistakes", title, self.note("rp_mistakes_help", n=len(worst)) + gallery
        )

    def footer(self, link: str | None) -> str:
        made = esc(self.t("rp_made", date=time.strftime("%Y-%m-%d %H:%M")))
        if not link:
            return f"<footer><p>{made}</p></footer>"
        shown = esc(link)
        target = f'<a href="{shown}">{shown}</a>' if _web(link) else shown
        return (f'<footer><h2>{esc(self.t("rp_link"))}</h2><p>{esc(self.t("rp_link_help"))}</p>'
                f'<p class="link">{target}</p><p>{made}</p></footer>')  # fmt: skip


def _cards(scores: list[tuple[str, str]]) -> str:
    return (
        '<div class="scores">'
        + "".join(
            f'<div class="score"><span class="label">{esc(label)}</span>'
            f'<span class="value">{esc(value)}</span></div>'
            for label, value in scores
        )
        + "</div>"
    )


def _paper(meta: dict) -> dict | None:
    from core import presets

    return presets.paper_for(meta["model"], meta["config"]["data"]["dataset"])


def _dataset(meta: dict):
    """The run's dataset as it was trained on (UserError when this machine has other
    images under its name: the pictures would not be the run's)."""
    from core.runs import run_data

    data = run_data(meta)
    if data.identity != meta["dataset"]["identity"] or len(data.y_test) != meta["test"]["support"]:
        raise UserError(f"{data.name} here is not the data run {meta['run_id']} was trained on")
    return data


def _web(link: str) -> bool:
    return urlsplit(link).scheme in ("http", "https") or link.startswith("/")


def _finite(v) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _short(value: float, lang: str) -> str:
    """A config float with the digits it has, as people write it: 0.003, 5e-05 (with a
    decimal comma in Spanish)."""
    written = f"{value:g}"
    return written.replace(".", ",") if lang == "es" else written


def picture(image: np.ndarray) -> str:
    """(C, H, W) uint8 -> a PNG data URI: a small image enlarged by whole pixels (nearest
    neighbour: no blur), a large one shrunk smoothly."""
    from PIL import Image

    img = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
    side = max(img.size)
    if side > MAX_PICTURE:
        img.thumbnail((MAX_PICTURE, MAX_PICTURE), Image.Resampling.LANCZOS)
    elif side < PICTURE:
        k = math.ceil(PICTURE / side)
        img = img.resize((img.width * k, img.height * k), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# -- charts ----------------------------------------------------------------------------------
W, H = 460, 280  # the chart's drawing units (it scales to its column)
LEFT, RIGHT, TOP, BOTTOM = 58, 14, 40, 44


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values from at most ``low`` to at least ``high``: steps of 1, 2, 2.5 or
    5 times a power of ten, about ``count`` of them."""
    if not high - low > 1e-6 * max(1.0, abs(high), abs(low)):  # flat, to float rounding
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9)
    ticks = []
    for k in range(4 * count + 2):  # a bounded walk: the step is at least a fifth of the span
        value = (first + k) * step
        ticks.append(round(value, 12))
        if value >= high - step * 1e-3:
            break
    return ticks


def _decimals(ticks: list[float]) -> int:
    """The decimals that write every tick exactly (0.25 -> 2, 0.2 -> 1, 5 -> 0)."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    return next((d for d in range(8) if abs(round(step, d) - step) < 1e-9 * max(1, step)), 8)


def _tag(name: str, words: str = "", **attrs) -> str:
    """One SVG element; ``words`` (its text) escaped, attribute names with _ for -."""
    shown = " ".join(
        f'{k.rstrip("_").replace("_", "-")}="{f"{v:.1f}" if isinstance(v, float) else esc(v)}"'
        for k, v in attrs.items()
    )
    return f"<{name} {shown}>{esc(words)}</{name}>" if words else f"<{name} {shown}/>"


def line_chart(title: str, x_label: str, xs: list, series: list, lang: str) -> str:
    """An SVG line chart of ``series``, each (name, values, colour, dashed), over ``xs``
    (the epochs): axes, ticks, a grid, a dot at each value (one epoch is one dot) and a
    legend. "" when no series has a finite value (an autoencoder's accuracy)."""
    drawn = [(name, [(x, y) for x, y in zip(xs, values, strict=False) if _finite(y)], color,
              dashed) for name, values, color, dashed in series]  # fmt: skip
    drawn = [d for d in drawn if d[1]]
    if not drawn:
        return ""
    ys = [y for _, points, _, _ in drawn for _, y in points]
    y_ticks = nice_ticks(min(ys), max(ys))
    y0, y1 = y_ticks[0], y_ticks[-1]
    first, last = int(min(xs)), int(max(xs))
    x0, x1 = (first - 1, last + 1) if last == first else (first, last)
    every = max(1, math.ceil((last - first + 1) / 10))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    bottom = TOP + plot_h

    def px(x) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def py(y) -> float:
        return TOP + (1 - (y - y0) / (y1 - y0)) * plot_h

    digits = _decimals(y_ticks)
    parts = [_tag("rect", x=LEFT, y=TOP, width=plot_w, height=plot_h, class_="plot")]
    for y in y_ticks:
        parts.append(_tag("line", x1=LEFT, x2=W - RIGHT, y1=py(y), y2=py(y), class_="grid"))
        parts.append(_tag("text", number(y, lang, digits), x=LEFT - 6, y=py(y) + 4.0,
                          text_anchor="end"))  # fmt: skip
    for x in range(first, last + 1, every):
        parts.append(_tag("line", x1=px(x), x2=px(x), y1=bottom, y2=bottom + 4, class_="axis"))
        parts.append(_tag("text", number(x, lang, 0), x=px(x), y=bottom + 17.0,
                          text_anchor="middle"))  # fmt: skip
    parts.append(_tag("line", x1=LEFT, x2=W - RIGHT, y1=bottom, y2=bottom, class_="axis"))
    parts.append(_tag("line", x1=LEFT, x2=LEFT, y1=TOP, y2=bottom, class_="axis"))
    parts.append(_tag("text", x_label, x=LEFT + plot_w / 2, y=H - 8, text_anchor="middle",
                      class_="label"))  # fmt: skip
    key_x = float(LEFT)
    for name, points, color, dashed in drawn:
        dash = {"stroke_dasharray": "6 4"} if dashed else {}
        line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        parts.append(_tag("polyline", points=line, fill="none", stroke=color,
                          stroke_width="2.2", **dash))  # fmt: skip
        parts += [_tag("circle", cx=px(x), cy=py(y), r="3.2", fill=color) for x, y in points]
        parts.append(_tag("line", x1=key_x, x2=key_x + 26, y1=24, y2=24, stroke=color,
                          stroke_width="2.2", **dash))  # fmt: skip
        parts.append(_tag("circle", cx=key_x + 13, cy=24, r="3.2", fill=color))
        parts.append(_tag("text", name, x=key_x + 32, y=28, class_="legend"))
        key_x += 44 + 7.5 * len(name)
    svg = (f'<svg viewBox="0 0 {W} {H}" role="img" aria-label="{esc(title)}">'
           f'{"".join(parts)}</svg>')  # fmt: skip
    return f'<figure class="chart"><figcaption>{esc(title)}</figcaption>{svg}</figure>'


STYLE = """
:root { --ink: #1b1b1b; --muted: #5b6470; --rule: #d8dde3; --soft: #f4f6f8; --blue: #1f5fa8; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; background: #fff; }
body { margin: 0; background: #fff; color: var(--ink); font: 15px/1.45 system-ui,
  -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 980px; margin: 0 auto; padding: 32px 28px 40px; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
header { border-bottom: 2px solid var(--ink); padding-bottom: 14px; margin-bottom: 8px; }
.kicker { margin: 0; color: var(--muted); text-transform: uppercase; letter-spacing: .08em;
  font-size: 12px; font-weight: 600; }
h1 { margin: 4px 0 12px; font-size: 28px; line-height: 1.2; overflow-wrap: anywhere; }
h2 { font-size: 19px; margin: 0 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--rule); }
section { margin-top: 26px; break-inside: avoid; page-break-inside: avoid; }
.facts { display: flex; flex-wrap: wrap; gap: 8px 34px; margin: 0; }
.facts dt { color: var(--muted); font-size: 12px; }
.facts dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
.facts code { font-size: 14px; }
.cols3 { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 16px;
  align-items: start; }
.cols2 { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; }
table { border-collapse: collapse; font-size: 13px; }
caption { text-align: left; font-weight: 700; padding: 0 0 4px; }
table.config { width: 100%; }
table.config th, table.config td { text-align: left; vertical-align: top; padding: 3px 6px;
  border-bottom: 1px solid var(--rule); }
table.config th { font-weight: 400; color: var(--muted); width: 58%; }
table.config td { font-weight: 600; overflow-wrap: break-word; }
.scores { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 10px; }
.score { background: var(--soft); border: 1px solid var(--rule); border-radius: 6px;
  padding: 8px 12px; }
.score .label { display: block; color: var(--muted); font-size: 12px; }
.score .value { display: block; font-size: 22px; font-weight: 700;
  font-variant-numeric: tabular-nums; }
.note { color: var(--muted); font-size: 13px; margin: 8px 0 0; }
.paper { margin: 10px 0 0; padding: 8px 12px; border-left: 4px solid var(--blue);
  background: var(--soft); }
figure { margin: 0; }
figure.chart figcaption { font-weight: 700; font-size: 14px; }
figure.chart svg { width: 100%; height: auto; display: block; }
svg text { font-size: 12.5px; fill: #333; font-family: inherit; }
svg text.label { font-size: 13px; fill: var(--muted); }
svg text.legend { font-size: 13px; fill: var(--ink); }
svg .plot { fill: #fff; stroke: none; }
svg .grid { stroke: #e6e9ed; stroke-width: 1; }
svg .axis { stroke: #888; stroke-width: 1; }
.wide { overflow-x: auto; }
table.cm { margin: 0 auto; font-variant-numeric: tabular-nums; }
table.cm th { font-size: 12px; font-weight: 600; padding: 4px 6px; }
table.cm thead th { vertical-align: bottom; text-align: center; white-space: nowrap; }
table.cm.rotated thead th:not(.corner) span { display: inline-block; writing-mode: vertical-rl;
  transform: rotate(180deg); text-align: left; }
table.cm tbody th { text-align: right; white-space: nowrap; }
table.cm th.corner { text-align: left; color: var(--muted); font-weight: 400; font-size: 11px; }
table.cm th.corner span { display: block; }
table.cm td { min-width: 48px; height: 34px; text-align: center; border: 1px solid #fff;
  padding: 2px 4px; }
table.cm td.hit { font-weight: 700; }
table.cm.small td { min-width: 30px; height: 24px; font-size: 11px; }
table.scores-table { min-width: 60%; font-variant-numeric: tabular-nums; }
table.scores-table th, table.scores-table td { padding: 4px 10px;
  border-bottom: 1px solid var(--rule); }
table.scores-table thead th { text-align: right; border-bottom: 2px solid var(--ink); }
table.scores-table thead th:first-child, table.scores-table tbody th { text-align: left; }
table.scores-table tbody th { font-weight: 400; }
table.scores-table td { text-align: right; }
table.scores-table tr.avg th { font-weight: 700; }
table.scores-table tr.first th, table.scores-table tr.first td { border-top: 2px solid var(--ink); }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(100px, 1fr));
  gap: 12px 10px; margin-top: 10px; }
.gallery figure { text-align: center; break-inside: avoid; }
.gallery img { width: 96px; height: 96px; object-fit: contain; image-rendering: pixelated;
  border: 1px solid var(--rule); background: #000; }
.gallery figcaption { font-size: 11.5px; line-height: 1.25; margin-top: 3px;
  overflow-wrap: anywhere; }
.gallery .said { display: block; color: #c92a2a; font-weight: 600; }
.gallery .truth { display: block; color: var(--muted); }
footer { margin-top: 30px; padding-top: 12px; border-top: 1px solid var(--rule);
  color: var(--muted); font-size: 13px; break-inside: avoid; }
footer h2 { color: var(--ink); border: 0; padding: 0; margin-bottom: 4px; font-size: 16px; }
footer p { margin: 4px 0; }
footer .link, footer .link a { color: var(--blue); overflow-wrap: anywhere;
  font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
@media screen and (max-width: 720px) { .cols3, .cols2 { grid-template-columns: 1fr; } }
@media print {
  @page { margin: 14mm; }
  body { font-size: 12px; }
  main { max-width: none; padding: 0; }
  section { margin-top: 18px; }
  .scores { grid-template-columns: repeat(5, minmax(0, 1fr)); gap: 6px; }
  .score { padding: 6px 8px; }
  .score .value { font-size: 17px; }
  .score .label, table.config { font-size: 11px; }
  a { color: inherit; text-decoration: none; }
}
"""
