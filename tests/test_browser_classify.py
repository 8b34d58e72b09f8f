"""The classify tab in a real Chromium, as a student meets it: the sketchpad keeps drawing
after it is cleared, the Spanish page shows and reads out no English, and loading the app's
pages fetches nothing from outside this machine (a classroom may be offline).

Needs Debian's chromium (make setup installs it); skipped where there is none.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest
import test_browser as real_browser
import test_gradio as tab_server
from test_browser import CHROMIUM, draw_a_stroke, streamlit_server

# The same fixtures as those modules' (a store with one tiny run, the tab served from it in
# this process, one Chromium), so these tests train nothing of their own.
store_root = tab_server.store_root
served = tab_server.served
browser = real_browser.browser

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium (make setup installs it)"),
]
ROOT = Path(__file__).resolve().parent.parent
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def open_tab(browser, url: str, lang: str, locale: str = "en-US"):
    """The tab at ``url`` in a browser whose own language is ``locale``, once its model list
    has filled and Gradio speaks the page's language."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, locale=locale)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.locator(f"#sketch-{lang} canvas").first.wait_for(timeout=60_000)
    ready = {"en": "available", "es": "disponible"}[lang]
    page.wait_for_function(f"() => document.body.innerText.includes('{ready}')", timeout=60_000)
    page.wait_for_function(f"() => document.documentElement.lang === '{lang}'", timeout=30_000)
    return page, errors


def wait_for_answer(page, lang: str) -> None:
    """The note explains the answer (a heat map is drawn), and no loading timer is left."""
    says = {"en": "Red marks", "es": "El rojo"}[lang]
    page.wait_for_function(
        f"() => document.querySelector('#note-{lang}').innerText.includes('{says}')",
        timeout=30_000,
    )
    assert "%" in page.locator(f"#answer-{lang}").inner_text()
    pending = f"#sketch-{lang} [data-testid=status-tracker]:not(.hide)"
    page.wait_for_function(f"() => !document.querySelector('{pending}')", timeout=10_000)


def brush_selected(page, lang: str) -> bool:
    return page.locator(f"#sketch-{lang} .toolbar-wrap button.highlight").count() == 1


@pytest.mark.parametrize("how", ["clear drawing", "trash icon"])
def test_the_sketchpad_draws_and_answers_again_after_each_clear(served, browser, how):
    """Issue 17.1: "Clear drawing" left the sketchpad on a loading timer that never ended,
    and the toolbar's trash icon deselected the brush; either way, drawing did nothing."""
    page, errors = open_tab(browser, served[0], "en")
    assert brush_selected(page, "en")  # picked for the student when the page opens
    draw_a_stroke(page, page, "#sketch-en canvas")
    wait_for_answer(page, "en")
    for _ in range(2):  # a sketchpad cleared once by value could not be cleared again
        if how == "clear drawing":
            page.get_by_role("button", name="Clear drawing", exact=True).click()
        else:
            page.locator("#sketch-en button[aria-label='Clear canvas']").click()
        page.wait_for_function(
            "() => document.querySelector('#note-en').innerText.includes('Draw something')",
            timeout=30_000,
        )
        assert "%" not in page.locator("#answer-en").inner_text()  # the old answer went
        page.wait_for_function(
            "() => document.querySelector('#sketch-en .toolbar-wrap button.highlight')",
            timeout=10_000,
        )
        assert brush_selected(page, "en")
        assert "select the draw tool" not in page.locator("#sketch-en").inner_text()
        draw_a_stroke(page, page, "#sketch-en canvas")
        wait_for_answer(page, "en")
    assert errors == []
    page.context.close()


# What Gradio shows or reads out in English unless told otherwise: its footer, the sketchpad's
# and the photo box's buttons and tooltips, prompts, and translation keys left raw.
GRADIO_ENGLISH = ["Use via API", "Built with Gradio", "Settings", "Brush", "Brush Size", "Erase",
                  "Pan", "Zoom in", "Zoom out", "Undo", "Redo", "Clear canvas", "Clear", "Upload",
                  "Upload file", "Paste from clipboard", "Capture from camera", "Webcam",
                  "Click to upload or drop files", "File upload", "More tabs", "undo",
                  "select the draw tool to start", "Drop Image Here", "Click to Upload",
                  "Loading", "processing"]  # fmt: skip
RAW_KEY = re.compile(r"\b(common|image_editor|upload_text|image|errors|chatbot)\.[a-z_]+\b")
# What a screen reader gets: every label and tooltip, and the status messages Gradio announces.
READ_OUT = """() => {
  const out = [];
  for (const e of document.querySelectorAll("[aria-label], [title], [placeholder], [alt]")) {
    for (const name of ["aria-label", "title", "placeholder", "alt"]) {
      if (e.hasAttribute(name)) out.push(e.getAttribute(name));
    }
  }
  for (const e of document.querySelectorAll("[aria-live], [role=status], [role=alert]")) {
    out.push(e.textContent.trim());
  }
  for (const e of document.querySelectorAll("input")) out.push(e.value);
  return out;
}"""
# The announcer's words as Gradio writes them (the last event's status).
LAST_ANNOUNCED = """() => [...document.querySelectorAll("[aria-live]")]
  .map((e) => e.textContent.trim()).filter(Boolean)"""


def english_in(page) -> list[str]:
    """The Gradio and app words in English found on the page: in its visible text, or as a
    whole label, tooltip, field value or announcement."""
    table = json.loads((ROOT / "assets" / "i18n" / "classify.json").read_text())
    ours = [v["en"] for v in table.values() if v["en"] != v["es"] and "{" not in v["en"]]
    shown = page.locator("body").inner_text()
    read = page.evaluate(READ_OUT)
    found = [w for w in GRADIO_ENGLISH if re.search(rf"\b{re.escape(w)}\b", shown) or w in read]
    found += [w for w in ours if w in shown or w in read]
    found += RAW_KEY.findall(shown) + [m for r in read for m in RAW_KEY.findall(r)]
    return found


def test_the_spanish_page_shows_and_reads_out_no_english(served, browser):
    """Issue 17.7, in a browser whose own language is English (Gradio follows the browser's
    language; the page follows its address)."""
    page, errors = open_tab(browser, served[0] + "es", "es")
    draw_a_stroke(page, page, "#sketch-es canvas")
    wait_for_answer(page, "es")
    # The announcer reads "Cargando" while an event runs (the heatmap's may still be
    # running after the answer shows, on a busy machine): wait for the last one to end.
    page.wait_for_function(
        f"() => {{ const said = ({LAST_ANNOUNCED})(); return said.length > 0 && "
        "!said.includes('Cargando'); }", timeout=30_000)  # fmt: skip
    assert page.evaluate(LAST_ANNOUNCED) == ["Listo"]  # an event done, read out in Spanish
    # The model list: Spanish words and numbers (the run's accuracy with a decimal comma).
    fields = page.evaluate("() => [...document.querySelectorAll('input')].map((i) => i.value)")
    assert any(re.search(r"exact\. 0,\d{3} · \d+ ép", v) for v in fields), fields
    assert "Pincel" in page.evaluate(READ_OUT)  # Gradio's own tooltips, in Spanish
    assert english_in(page) == []
    page.get_by_role("tab", name="Foto").click()
    page.locator("#photo-es input[type=file]").wait_for(state="attached", timeout=10_000)
    page.wait_for_timeout(500)  # the photo box's buttons
    assert "Pegar del portapapeles" in page.evaluate(READ_OUT)
    assert english_in(page) == []
    assert page.locator("footer").filter(visible=True).count() == 0
    assert errors == []
    page.context.close()


def test_the_english_page_stays_english_in_a_spanish_browser(served, browser):
    page, errors = open_tab(browser, served[0], "en", locale="es-ES")
    read = page.evaluate(READ_OUT)
    assert "Clear canvas" in read and "Limpiar lienzo" not in read
    assert errors == []
    page.context.close()


def off_machine(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme not in ("data", "blob", "about") and parsed.hostname not in LOCAL_HOSTS


ICONS = "() => [...document.querySelectorAll('link[rel~=icon]')].map((l) => l.href)"


def assert_local_icon(page) -> None:
    """The page's favicon (the one it names, else /favicon.ico) is served from this machine,
    and it is our PNG."""
    origin = "{0.scheme}://{0.netloc}".format(urlparse(page.url))
    for href in page.evaluate(ICONS) or [f"{origin}/favicon.ico"]:
        assert not off_machine(href), href
        with urllib.request.urlopen(href, timeout=10) as r:
            assert r.read(8) == b"\x89PNG\r\n\x1a\n", href


def test_loading_the_pages_fetches_nothing_from_outside_this_machine(store_root, served, browser):
    """Issue 17.14: home and Classify (the Streamlit app, with the tab inside it) and the tab
    at its own port, in both languages, every request the browser makes recorded."""
    requests: list[str] = []
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    with streamlit_server(store_root) as app:
        for lang in ("en", "es"):
            page.goto(f"{app}/?lang={lang}")
            page.wait_for_selector("[data-testid=stApp] h1", timeout=60_000)
            page.wait_for_timeout(1000)  # the favicon and late fonts
            assert_local_icon(page)
            page.goto(f"{app}/classify?lang={lang}")
            frame = page.wait_for_selector("iframe", timeout=120_000).content_frame()
            frame.wait_for_selector(f"#sketch-{lang} canvas", timeout=120_000)
            frame.wait_for_function(f"() => document.documentElement.lang === '{lang}'")
            page.wait_for_timeout(1000)
    for lang in ("en", "es"):
        page.goto(served[0] + ("es" if lang == "es" else ""))
        page.locator(f"#sketch-{lang} canvas").first.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)
        assert_local_icon(page)
    context.close()
    assert len(requests) > 20  # the pages, their scripts and styles were all seen
    assert [url for url in requests if off_machine(url)] == []
