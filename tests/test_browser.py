"""End to end in a real Chromium: the Streamlit server as `make run` starts it, driven by
Playwright. Every page renders in English and Spanish; a tiny run trains from the Train
page with live curves; clicking a confusion-matrix cell shows exactly that cell's images.

Needs Debian's chromium (make setup installs it); skipped where there is none.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import stroke

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip
# The last two are the teacher's: the browser here is on the machine itself, with no key set.
PAGES = ["home", "train", "evaluate", "compare", "embeddings", "inside", "autoencoder",
         "experiments", "classify", "class", "library"]  # fmt: skip

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium (make setup installs it)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(store: Path):
    """`streamlit run app.py` on a free port with ``store`` as its model store (and the
    Gradio classify tab it starts on another free port); yields its URL."""
    port = free_port()
    env = dict(os.environ, CNN_CLASSROOM_STORE=str(store), CNN_CLASSROOM_OFFLINE="1",
               CNN_CLASSROOM_GRADIO="on", CNN_CLASSROOM_GRADIO_PORT=str(free_port()))  # fmt: skip
    log = store / "server.log"  # a file, not a pipe: an unread pipe can block the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the Streamlit server did not start: " + log.read_text()[-2000:])
    yield url
    proc.terminate()  # the server stops its jobs and joins its worker on the way out
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the server did not stop within 60 s: " + log.read_text()[-2000:])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app with an empty store of its own."""
    with streamlit_server(tmp_path_factory.mktemp("browser-store")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("[data-testid=stApp]")
    page.wait_for_function("!document.querySelector('[data-testid=stStatusWidget]')",
                           timeout=60_000)  # fmt: skip
    return page, errors


def assert_clean(page, errors) -> None:
    assert page.locator("[data-testid=stException]").count() == 0, page.inner_text("body")[:2000]
    assert errors == []


@pytest.mark.parametrize("lang", ["en", "es"])
def test_every_page_renders(server, browser, lang):
    titles = {"en": "Train a network", "es": "Entrena una red"}
    for name in PAGES:
        page, errors = open_page(browser, f"{server}/{name}?lang={lang}")
        page.wait_for_selector("h1, iframe")  # Classify shows the Gradio tab's own title
        assert_clean(page, errors)
        nav = page.locator("[data-testid=stSidebarNav]").inner_text()
        assert ("Entrenar" if lang == "es" else "Train") in nav  # our navigation, not pages/
        if name == "train":
            assert titles[lang] in page.inner_text("body")
        page.close()


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the Streamlit selectbox labelled ``label``."""
    box = page.locator("[data-testid=stSelectbox]").filter(has_text=label)
    box.locator("[role=combobox], input").first.click()
    page.get_by_role("option", name=option, exact=True).click()


def test_train_then_click_a_confusion_cell(server, browser):
    page, errors = open_page(browser, f"{server}/train")
    choose(page, "Dataset", "digits")
    epochs = page.get_by_role("spinbutton", name="Epochs")
    epochs.fill("3")
    epochs.press("Enter")
    started = time.perf_counter()
    page.get_by_role("button", name="Start", exact=True).click()
    # Live curves: the plot appears while the run goes (or right after, for so tiny a run).
    page.wait_for_selector(".js-plotly-plot", timeout=30_000)
    first_plot = time.perf_counter() - started
    page.get_by_text("Finished and saved").wait_for(timeout=120_000)
    assert "job=" in page.url  # the run can be reattached from the URL
    assert_clean(page, errors)
    print(f"first live curve after {first_plot:.1f} s")
    # A refresh is a new session: the job id and the private token in the URL reattach it.
    page.reload()
    page.get_by_text("Finished and saved").wait_for(timeout=60_000)
    page.wait_for_selector(".js-plotly-plot", timeout=30_000)  # with its curves

    page.goto(f"{server}/evaluate")
    page.wait_for_selector(".js-plotly-plot .scatterlayer .point", timeout=60_000)
    assert_clean(page, errors)
    # Cell (true 3, predicted 3) of the clickable layer: the diagonal always has images.
    n = 10
    cell = 3 * n + 3
    # The confusion matrix's chart (its key starts cm_), its clickable layer's points.
    matrix = page.locator("[class*='st-key-cm_'] .js-plotly-plot .scatterlayer .trace").last
    matrix.locator(".point").nth(cell).click(force=True)
    caption = page.get_by_text(re.compile(r"test images of")).first
    caption.wait_for(timeout=30_000)
    text = caption.inner_text()
    count = int(re.match(r"\s*(\d+)", text).group(1))
    assert re.search(r"of 3 predicted as 3", text), text
    # Exactly that cell: as many images as the matrix shows in it (the gallery shows up to 48).
    matrix_text = matrix.locator("text")
    assert int(matrix_text.nth(cell).text_content()) == count > 0
    # The cell's gallery arrives just after its caption: as many images (up to 48), each loaded.
    cell_images = "[data-gallery=cell] img"
    page.wait_for_function(
        f"[...document.querySelectorAll('{cell_images}')].filter(i => i.naturalWidth).length"
        f" === {min(count, 48)}",
        timeout=30_000,
    )
    assert_clean(page, errors)


def test_a_running_job_survives_leaving_and_refreshing(server, browser):
    page, errors = open_page(browser, f"{server}/train")
    choose(page, "Dataset", "digits")
    epochs = page.get_by_role("spinbutton", name="Epochs")
    epochs.fill("150")  # long enough to still be running after we come back
    epochs.press("Enter")
    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_text(re.compile(r"images/s")).first.wait_for(timeout=60_000)
    job_url = page.url
    page.get_by_role("link", name="Home").click()  # leave...
    page.get_by_role("heading", name="The dataset").wait_for(timeout=30_000)
    page.get_by_role("link", name="Train", exact=True).click()  # ...and come back: running
    progress = page.get_by_text(re.compile(r"epoch (\d+)/150"))
    progress.first.wait_for(timeout=30_000)
    epoch_before = int(re.search(r"epoch (\d+)/150", progress.first.inner_text()).group(1))
    page.goto(job_url)  # a refresh from the URL reattaches too
    progress = page.get_by_text(re.compile(r"epoch (\d+)/150"))
    progress.first.wait_for(timeout=30_000)
    page.wait_for_timeout(2500)
    epoch_after = int(re.search(r"epoch (\d+)/150", progress.first.inner_text()).group(1))
    assert epoch_after >= epoch_before  # the same run, still going
    page.get_by_role("button", name="Stop", exact=True).click()
    page.get_by_text(re.compile("Stopped")).wait_for(timeout=30_000)
    assert_clean(page, errors)


# Where a dot of the map is on the screen, and its test-set index (its customdata).
DOT_ON_SCREEN = """([trace, k]) => {
    const gd = document.querySelector('.st-key-emb_map_box .js-plotly-plot');
    const layout = gd._fullLayout, data = gd._fullData[trace];
    const box = gd.getBoundingClientRect();
    return [box.left + layout._size.l + layout.xaxis.l2p(data.x[k]),
            box.top + layout._size.t + layout.yaxis.l2p(data.y[k]), data.customdata[k]];
}"""
THUMB = "document.querySelector('.cnn-hover-thumb')"
PICTURE_MATCHES_LABEL = f"""() => {{
    const label = document.querySelector('.hoverlayer .hovertext');
    return {THUMB}.style.display === 'block' && label !== null
        && label.textContent.endsWith('#' + {THUMB}.dataset.index);
}}"""
SHOWN_PICTURE = f"""() => {{
    const tip = {THUMB}, side = tip.width;
    const rgba = tip.getContext('2d').getImageData(0, 0, side, side).data;
    return [Number(tip.dataset.index), Array.from(rgba).filter((_, i) => i % 4 === 0)];
}}"""


def test_hovering_a_map_dot_shows_its_picture(server, browser):
    from core import data as datasets
    from core.config import DataConfig

    page, errors = open_page(browser, f"{server}/embeddings")
    choose(page, "Features of", "Raw pixels (no network)")
    page.get_by_text("PCA", exact=True).click()
    page.get_by_text(re.compile(r"points · map")).first.wait_for(timeout=60_000)
    page.wait_for_selector(".st-key-emb_map_box .js-plotly-plot .legend", timeout=60_000)
    page.wait_for_function(f"{THUMB} !== null", timeout=30_000)
    atlas = "document.querySelector('.st-key-emb_map_box_atlas img')"
    page.wait_for_function(f"{atlas} !== null && {atlas}.naturalWidth > 0", timeout=30_000)
    x, y, _ = page.evaluate(DOT_ON_SCREEN, [2, 7])
    page.mouse.move(x - 40, y - 40)
    page.mouse.move(x, y, steps=4)
    # Plotly handles hover events a little later than the pointer moves: wait until the
    # picture and Plotly's own label (with "#index") name the same dot, then read both at once.
    page.wait_for_function(PICTURE_MATCHES_LABEL, timeout=10_000)
    shown, pixels = page.evaluate(SHOWN_PICTURE)
    # The picture is the test image's (16 grey levels), enlarged without smoothing.
    image = datasets.load(DataConfig()).x_test[shown, 0]
    side = int(len(pixels) ** 0.5)
    rows = (2 * np.arange(side) + 1) * image.shape[0] // (2 * side)  # under each pixel's centre
    expected = (image[np.ix_(rows, rows)] >> 4).astype(int) * 17
    assert np.array_equal(np.array(pixels).reshape(side, side), expected)
    page.mouse.move(5, 5)  # off the map: the picture goes
    page.wait_for_function(f"{THUMB}.style.display === 'none'", timeout=10_000)
    assert_clean(page, errors)


def draw_a_stroke(page, frame, canvas_selector: str) -> None:
    """Drag the mouse across the sketchpad's canvas (inside ``frame``)."""
    canvas = frame.locator(canvas_selector).first
    canvas.wait_for(timeout=60_000)
    stroke(page, canvas)


def test_the_classify_page_embeds_the_tab_and_a_drawing_gets_an_answer(server, browser):
    """The Gradio tab inside the Streamlit page, at the host name the browser used, in the
    page's language; a stroke on its sketchpad gets a prediction and an explanation."""
    page, errors = open_page(browser, f"{server}/classify?lang=es")
    frame_element = page.wait_for_selector("iframe", timeout=90_000)
    src = frame_element.get_attribute("src")
    assert src.startswith("http://127.0.0.1:") and src.endswith("/es"), src
    frame = frame_element.content_frame()
    frame.wait_for_selector("#sketch-es canvas", timeout=60_000)
    # The model list fills on load (training the fast preset first if the store is empty).
    frame.wait_for_function(
        "() => !document.body.innerText.includes('select the draw tool')", timeout=30_000
    )
    frame.wait_for_function("() => document.body.innerText.includes('disponible')", timeout=180_000)
    draw_a_stroke(page, frame, "#sketch-es canvas")
    frame.wait_for_function(
        "() => document.querySelector('#note-es').innerText.includes('El rojo')", timeout=60_000
    )
    assert "%" in frame.locator("#answer-es").inner_text()
    assert_clean(page, errors)


def test_a_zip_of_photos_trains_and_the_classify_tab_answers_with_its_classes(
    server, browser, tmp_path
):
    """Issue 7: drop a zip of class folders on the Train page, train efficientnet_lite0 on
    it, then drop a photo on the classify tab: the answer names the zip's own classes."""
    from test_backbone import write_photos

    folder = write_photos(tmp_path / "bugs")
    zipped = shutil.make_archive(str(tmp_path / "bugs"), "zip", tmp_path, "bugs")
    page, errors = open_page(browser, f"{server}/train")
    choose(page, "Model", "efficientnet_lite0")
    page.get_by_text("Your own photos").click()
    page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(zipped)
    page.get_by_text("bugs.zip: 16 images in 2 classes").wait_for(timeout=60_000)
    epochs = page.get_by_role("spinbutton", name="Epochs")
    epochs.fill("2")
    epochs.press("Enter")
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_text("Finished and saved").wait_for(timeout=180_000)
    assert_clean(page, errors)

    page.goto(f"{server}/classify")
    frame = page.wait_for_selector("iframe", timeout=90_000).content_frame()
    frame.wait_for_selector("#sketch-en canvas", timeout=60_000)
    frame.wait_for_function("() => document.body.innerText.includes('available')",
                            timeout=60_000)  # fmt: skip
    frame.get_by_label("Trained model").click()
    frame.get_by_role("option").filter(has_text="efficientnet_lite0 · bugs").first.click()
    frame.get_by_role("tab", name="Photo").click()
    frame.locator("#photo-en input[type=file]").set_input_files(folder / "ants" / "0.jpg")
    frame.wait_for_function(
        "() => /ants[\\s\\S]*bees|bees[\\s\\S]*ants/.test("
        "document.querySelector('#answer-en').innerText)", timeout=60_000
    )  # fmt: skip
    assert "288×288 colour" in frame.locator("#note-en").inner_text()
    assert_clean(page, errors)
