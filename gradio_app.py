"""The classify tab: draw, drop, paste or film a piece of clothing; a trained model answers,
shows the picture it really gets and where it looked.

    .venv/bin/python gradio_app.py [--port 7860] [--host localhost] [--store DIR]

English at ``/``, Spanish at ``/es``. ``make run`` starts it beside the Streamlit app, which
shows it as its Classify page. The API endpoint ``/classify`` takes one image file and returns
the label confidences (``gradio_client``: ``client.predict(handle_file(path),
api_name="/classify")``).

Safety (DESIGN's checklist): uploads are read by ``core.classify`` (size cap, formats by
content from an allow-list, pixel cap from the header before decoding), never by Gradio's own
image decoding (events run with ``preprocess=False``); uploads above MAX_FILE_SIZE are refused
by the server; a queue with one worker per core; bound to localhost unless ``--host`` says
otherwise; no share link; no run history kept; uploads and drawings are deleted from
Gradio's cache an hour after they came (DELETE_CACHE), and all of them when the server stops.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a classroom

import gradio as gr
import numpy as np

from core import UserError, access, classify, explain, preprocess
from core.device import cores
from ui.text import LANGUAGES, class_name, number, percent, plain, run_label, text

TOP_K = 5  # classes shown in the answer
UNSURE = 50  # percent: below it the answer says "not sure" (the page's slider starts here)
SHOWN = 224  # pixels the 28x28 pictures are enlarged to (nearest neighbour: crisp pixels)
CANVAS = 400  # the sketchpad's side, in pixels
MAX_FILE_SIZE = classify.MAX_FILE_BYTES  # refused by the server before any of our code runs
QUEUE_SIZE = 128  # waiting calls beyond this are told the server is busy
# (every, older than) in seconds: every 10 minutes Gradio deletes the uploads and drawings
# this app put in its cache once they are an hour old, and all of them when it stops. A
# picture is answered at once; another model picked for one older than that asks for the
# picture again (its file is gone, so it cannot be read).
DELETE_CACHE = (600, 3600)
FAVICON = Path(__file__).resolve().parent / "assets" / "favicon.png"  # served by this server


def _upload_folder() -> str:
    """Where Gradio keeps uploads: the only place our handlers read files from."""
    return gr.utils.get_upload_folder()


def _path_of(payload) -> str | None:
    """The server-side path of a Gradio file payload (a FileData dict), or None."""
    if isinstance(payload, dict) and isinstance(payload.get("path"), str):
        return payload["path"]
    return None


def _message(error: UserError, lang: str) -> str:
    """A user's mistake in their language."""
    if isinstance(error, preprocess.BlankImage):
        return text("cls_blank", lang)
    if isinstance(error, preprocess.ImageTooLarge):
        size = number(error.pixels / 1e6, lang) if error.pixels else "?"
        return text(
            "cls_too_large", lang, size=size, limit=number(preprocess.MAX_PIXELS / 1e6, lang)
        )
    if isinstance(error, classify.FileTooLarge):
        return text("cls_file_too_large", lang, size=number(error.size / 2**20, lang, 1),
                    limit=number(MAX_FILE_SIZE / 2**20, lang))  # fmt: skip
    if isinstance(error, classify.NoRun):
        return text("cls_run_missing" if error.run_id else "cls_no_run", lang)
    if isinstance(error, preprocess.UnreadableImage):
        return text("cls_unreadable", lang)
    return str(error)


def _picture(x) -> np.ndarray:
    """A model input (1, C, h, w) -> uint8 picture enlarged to about SHOWN pixels."""
    shown = explain.to_display(x)
    return explain.enlarge(shown, max(1, SHOWN // shown.shape[0]))


class ClassifyTab:
    """The handlers behind both language pages; one instance per server."""

    def __init__(self, classifier: classify.Classifier):
        self.classifier = classifier

    # -- the model picker ------------------------------------------------------------------
    def choices(self, lang: str, progress=gr.Progress()):  # noqa: B008 (how Gradio asks)
        """On page load and "Refresh": the runs (training the fast preset when there is none)
        as dropdown choices, the best one selected."""

        def report(done: float, what: str) -> None:
            progress(done, desc=text(f"cls_{what}", lang))

        try:
            best = self.classifier.ensure_run(report)
        except UserError as e:
            return gr.update(choices=[], value=None), _message(e, lang)
        runs, names = self.classifier.runs(), self.classifier.store.names()
        options = [(run_label(m, lang, names.get(m["run_id"])), m["run_id"]) for m in runs]
        ready = text("cls_ready", lang, n=number(len(runs), lang))
        return gr.update(choices=options, value=best), ready

    # -- classifying -----------------------------------------------------------------------
    def _answer(self, path: str | None, run_id: str | None, lang: str, unsure: float = 0):
        """(the answer, what it sees, where it looked, explanation) for one image file; the
        answer says "not sure" and keeps the three best guesses when the best is below
        ``unsure`` percent."""
        if path is None:
            return _label(None, lang), None, None, text("cls_prompt", lang)
        if not run_id:
            return _label(None, lang), None, None, text("cls_no_run", lang)
        try:
            image = self.classifier.read(path, inside=_upload_folder())
            pred = self.classifier.predict(image, run_id)
            heat, method = self.classifier.heatmap(pred)
        except UserError as e:
            return _label(None, lang), None, None, f"⚠️ {_message(e, lang)}"
        ranked, limit = pred.top(len(pred.classes)), (unsure or 0) / 100
        doubt = ""
        if ranked[0][1] < limit:
            doubt = text("cls_not_sure", lang, p=percent(ranked[0][1], lang, 0),
                         limit=percent(limit, lang, 0)) + "\n\n"  # fmt: skip
            ranked = ranked[:3]
        label = _label({class_name(name, lang): p for name, p in ranked}, lang, bool(doubt))
        seen = _picture(pred.x)
        looked = explain.overlay(seen, explain.enlarge((heat * 255).astype(np.uint8),
                                 seen.shape[0] // heat.shape[0]) / 255.0)  # fmt: skip
        top = class_name(pred.top(1)[0][0], lang)
        _, meta = self.classifier.model(run_id)
        size, channels = meta["input"]["size"], meta["input"]["channels"]
        seen_note = text("cls_seen_note" if channels == 1 else "cls_seen_note_colour", lang,
                         size=size)  # fmt: skip
        # gr.Markdown renders links: a class of somebody's zip is shown as text.
        why = text(f"cls_explain_{method}", lang, name=plain(top), model=meta["model"])
        return label, seen, looked, f"{doubt}{seen_note}\n\n{why}"

    def from_sketch(self, editor, run_id: str | None, lang: str, unsure: float = 0):
        """The sketchpad's flattened picture (its "composite")."""
        composite = editor.get("composite") if isinstance(editor, dict) else None
        if _path_of(composite) is None:
            return _label(None, lang), None, None, text("cls_prompt", lang)
        return self._answer(_path_of(composite), run_id, lang, unsure)

    def from_photo(self, payload, run_id: str | None, lang: str, unsure: float = 0):
        return self._answer(_path_of(payload), run_id, lang, unsure)

    def again(self, source: str, editor, photo, run_id: str | None, lang: str,
              unsure: float = 0):  # fmt: skip
        """Another model or threshold picked: answer again for the picture last given
        ("sketch" or "photo")."""
        if source == "photo":
            return self.from_photo(photo, run_id, lang, unsure)
        return self.from_sketch(editor, run_id, lang, unsure)

    def api(self, payload) -> dict:
        """``/classify``: one image file -> {class: probability} from the best stored run
        (with an empty store, as the page does: the fast preset trained once, then)."""
        path = _path_of(payload)
        try:
            run_id = self.classifier.ensure_run()
            if path is None:
                raise preprocess.UnreadableImage()
            image = self.classifier.read(path, inside=_upload_folder())
            pred = self.classifier.predict(image, run_id)
        except UserError as e:
            raise gr.Error(_message(e, "en"), print_exception=False) from None
        return dict(pred.top(len(pred.classes)))


def _label(value: dict | None, lang: str, unsure: bool = False) -> dict:
    """The answer component's update: the classes and their probabilities (None: empty),
    headed by the top class, or, when not sure, by no class and a title that says so."""
    title = text("cls_answer_unsure" if unsure else "cls_answer", lang)
    return gr.update(value=value, show_heading=not unsure, label=title)


def _page(demo: gr.Blocks, tab: ClassifyTab, lang: str) -> None:
    """One language's page (call inside ``demo`` or one of its route contexts)."""

    def tx(key: str, **values) -> str:
        return text(key, lang, **values)

    language = gr.State(lang)
    gr.Navbar(main_page_name=LANGUAGES["en"])  # the pages are the languages
    gr.Markdown(f"# {tx('cls_title')}\n{tx('cls_intro')}")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            run = gr.Dropdown(label=tx("cls_model"), info=tx("cls_model_info"), choices=[],
                              interactive=True)  # fmt: skip
            with gr.Row():
                status = gr.Markdown()
                refresh = gr.Button(tx("cls_refresh"), size="sm", scale=0, min_width=140)
            with gr.Tabs():
                with gr.Tab(tx("cls_draw")):
                    sketch = gr.Sketchpad(
                        label=tx("cls_sketch"),
                        canvas_size=(CANVAS, CANVAS),
                        fixed_canvas=True,
                        brush=gr.Brush(default_size=14, colors=["#000000"], color_mode="fixed"),
                        layers=False,
                        transforms=(),
                        elem_id=f"sketch-{lang}",
                    )
                    clear = gr.Button(tx("cls_clear"), size="sm")
                with gr.Tab(tx("cls_photo")):
                    photo = gr.Image(label=tx("cls_photo_label"), type="filepath",
                                     sources=["upload", "clipboard", "webcam"],
                                     elem_id=f"photo-{lang}")  # fmt: skip
        with gr.Column(scale=1):
            answer = gr.Label(label=tx("cls_answer"), num_top_classes=TOP_K,
                              elem_id=f"answer-{lang}")  # fmt: skip
            with gr.Row():
                seen = gr.Image(label=tx("cls_seen"), interactive=False, height=SHOWN + 40,
                                format="png", buttons=[])  # fmt: skip
                looked = gr.Image(label=tx("cls_heat"), interactive=False, height=SHOWN + 40,
                                  format="png", buttons=[])  # fmt: skip
            unsure = gr.Slider(0, 95, value=UNSURE, step=5, label=tx("cls_unsure"),
                               info=tx("cls_unsure_info"), elem_id=f"unsure-{lang}")  # fmt: skip
            note = gr.Markdown(tx("cls_prompt"), elem_id=f"note-{lang}")

    outputs = [answer, seen, looked, note]
    source = gr.State("sketch")  # which picture was given last: a new model answers for it
    quiet = {"api_visibility": "private", "preprocess": False, "show_progress": "minimal"}
    drawn = sketch.change(tab.from_sketch, [sketch, run, language, unsure], outputs,
                          trigger_mode="always_last", **quiet)  # fmt: skip
    drawn.then(lambda: "sketch", None, source, api_visibility="private")
    given = photo.change(tab.from_photo, [photo, run, language, unsure], outputs, **quiet)
    given.then(lambda: "photo", None, source, api_visibility="private")
    # The editor's own trash button, pressed for the student: setting the sketchpad's value
    # from the server (returning None) left it waiting on a timer that never ended, drawing
    # nothing until the page was reloaded (Gradio 6.31).
    clear.click(None, js=_CLEAR.replace("SKETCH", f"sketch-{lang}"), api_visibility="private")
    for picked in (run.change, unsure.change):  # the latest value only, not every step
        picked(tab.again, [source, sketch, photo, run, language, unsure], outputs,
               trigger_mode="always_last", **quiet)  # fmt: skip
    for trigger in (demo.load, refresh.click):  # the list fills when the page opens
        trigger(tab.choices, language, [run, status], api_visibility="private")
    demo.load(None, js=_page_script(lang))


# Gradio's own labels that it does not translate (no i18n key): the key of their text here,
# whose English is Gradio's exact words. The page replaces them in aria-label and title.
_GRADIO_LABELS = ["upload_file", "capture", "paste", "click_upload", "file_input", "more_tabs",
                  "undo"]  # fmt: skip


def _page_script(lang: str) -> str:
    """The page's script, run once it loads: keep the brush, Gradio's labels in ``lang``."""
    labels = {}
    if lang != "en":
        labels = {text(f"cls_g_{k}", "en"): text(f"cls_g_{k}", lang) for k in _GRADIO_LABELS}
    return _PAGE.replace("SKETCH", f"sketch-{lang}").replace("LABELS", json.dumps(labels))


# Watches the page as Gradio redraws it. (1) Gradio's sketchpad has no tool selected when it
# opens, and again after its trash button empties it: it then shows "select the draw tool to
# start" and ignores the mouse. Whenever it is in that state, pick the brush (the first of
# its round tool buttons) so a student draws at once and keeps drawing after a clear.
# (2) Gradio's untranslated labels (LABELS: its English -> ours) are replaced.
_PAGE = """() => {
  const labels = LABELS;
  const pickBrush = () => {
    const root = document.querySelector("#SKETCH");
    const prompt = root && root.querySelector(".image-container > .empty.wrap");
    if (!prompt || !prompt.textContent.trim()) return;  // a tool is selected
    if (root.querySelector(".toolbar-wrap button.highlight")) return;
    const brush = root.querySelector(".toolbar-wrap button.quite-round");
    if (brush) brush.click();
  };
  const relabel = () => {
    for (const [english, words] of Object.entries(labels)) {
      for (const name of ["aria-label", "title"]) {
        for (const e of document.querySelectorAll(`[${name}="${english}"]`)) {
          e.setAttribute(name, words);
        }
      }
    }
  };
  const both = () => { pickBrush(); relabel(); };
  new MutationObserver(both).observe(document.body, {childList: true, subtree: true,
    attributes: true, attributeFilter: ["aria-label", "title"]});
  both();
}"""
# "Clear drawing": the last button of the editor's top bar is its trash (clear canvas).
_CLEAR = """() => {
  const buttons = document.querySelectorAll("#SKETCH .top-panel button");
  if (buttons.length) buttons[buttons.length - 1].click();
}"""
# Gradio words its own buttons, tooltips and status messages in the browser's language, but
# a page's language here is its address (English at /, Spanish at /es): set Gradio's locale
# from the address, through the same call its settings panel makes. This runs once Gradio's
# own modules are loaded (it adds this to the page after they start).
_LOCALE = """<script>
(async () => {
  const lang = /\\/es\\/?$/.test(location.pathname) ? "es" : "en";
  const core = performance.getEntriesByType("resource").map((e) => e.name)
    .find((url) => /\\/assets\\/core-[\\w-]+\\.js$/.test(new URL(url).pathname));
  if (core) (await import(core)).changeLocale(lang);
})();
</script>"""


def build_demo(classifier: classify.Classifier | None = None) -> gr.Blocks:
    """The classify tab: English at ``/``, Spanish at ``/es``, and the ``/classify`` API."""
    tab = ClassifyTab(classifier or classify.Classifier())
    with gr.Blocks(title="CNN Classroom · Classify", delete_cache=DELETE_CACHE) as demo:
        _page(demo, tab, "en")
        # The API: one image file in, label confidences out (no UI of its own).
        api_in = gr.Image(type="filepath", visible=False)
        api_out = gr.Label(visible=False)
        gr.Button(visible=False).click(tab.api, api_in, api_out, api_name="classify",
                                       preprocess=False)  # fmt: skip
    with demo.route(LANGUAGES["es"], "es"):
        _page(demo, tab, "es")
    demo.queue(default_concurrency_limit=cores(), max_size=QUEUE_SIZE)
    return demo


def _gradio_words() -> gr.I18n:
    """Words Gradio's own interface lacks in its translations (it would show the key)."""
    keys = {"common.complete": "cls_gradio_complete"}
    return gr.I18n(**{lang: {k: text(v, lang) for k, v in keys.items()} for lang in LANGUAGES})


def launch(demo: gr.Blocks, host: str, port: int, **kwargs):
    """Serve ``demo`` safely: no share link, no run history, the upload cap; Gradio's own
    words in the page's language, its favicon from this server. No footer: its API and
    settings pages are in English (the API itself still answers, see the module's doc)."""
    return demo.launch(server_name=host, server_port=port, share=False,
                       max_file_size=MAX_FILE_SIZE, run_history=False, show_error=False,
                       ssr_mode=False, quiet=True, favicon_path=FAVICON, footer_links=[],
                       i18n=_gradio_words(), head=_LOCALE, **_class_login(),
                       **kwargs)  # fmt: skip


def _class_login() -> dict:
    """With a class password, every request passes ``ClassGate``; nothing otherwise."""
    if access.password() is None:
        return {}
    from starlette.middleware import Middleware

    return {"app_kwargs": {"middleware": [Middleware(ClassGate)]}}


LOOPBACK = ("127.0.0.1", "::1")


class ClassGate:
    """ASGI middleware for a class password (CNN_CLASSROOM_PASSWORD): a request passes when
    its browser gave the password on the Streamlit pages (the Classify page's address
    carries ``?class=TOKEN`` once; a cookie keeps it) or when it carries the password itself
    (``X-Class-Password``: API clients). Anything else gets 401 and one line."""

    COOKIE = "cnn-classroom-class"
    STARTUP = "/gradio_api/startup-events"  # launch() calls it on this machine, unannounced

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        from starlette.requests import HTTPConnection
        from starlette.responses import PlainTextResponse

        conn = HTTPConnection(scope)
        if conn.url.path == self.STARTUP and conn.client and conn.client.host in LOOPBACK:
            return await self.app(scope, receive, send)  # Gradio's own call as it starts
        given = conn.query_params.get("class", "")
        if given and access.accepts_token(given):  # from the pages: remembered
            return await self.app(scope, receive, self._remember(send))
        if access.accepts_token(conn.cookies.get(self.COOKIE, "")) or access.accepts(
            conn.headers.get("x-class-password", "\0")
        ):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        words = " · ".join(text("pw_needed", lang) for lang in LANGUAGES)
        return await PlainTextResponse(words, status_code=401)(scope, receive, send)

    def _remember(self, send):
        cookie = f"{self.COOKIE}={access.token()}; Path=/; HttpOnly; SameSite=Lax".encode()

        async def with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"set-cookie", cookie)]}  # fmt: skip
            await send(message)

        return with_cookie


def _exit_with(parent: int) -> None:
    """End this process when ``parent`` (the Streamlit server that started it) is gone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=7860)
    p.add_argument(
        "--host",
        default="localhost",
        help="localhost (this computer only) or 0.0.0.0 (the classroom network)",
    )
    p.add_argument("--store", help="the model store (default: CNN_CLASSROOM_STORE or ~/.cache)")
    p.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # set by app.py
    args = p.parse_args(argv)
    if args.parent:
        _exit_with(args.parent)
    from core.data.uploads import clean_stale
    from core.store import Store

    store = Store(args.store)  # None: CNN_CLASSROOM_STORE or the user cache
    clean_stale(store.root)  # once per start: what a killed process left half-written
    demo = build_demo(classify.Classifier(store))
    print(f"classify tab on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    launch(demo, args.host, args.port)


if __name__ == "__main__":
    main()
