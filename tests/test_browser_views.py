"""Issue 21's three views in a real Chromium, in English and Spanish: the moving map while a
run learns and its replay, the reliability diagram with a clicked bar's images, and the
Pretraining page's study run to its chart."""

from __future__ import annotations

import re

import pytest
from test_browser import (  # noqa: F401  (browser: a fixture; pytestmark: skip without Chromium)
    assert_clean,
    browser,
    choose,
    open_page,
    pytestmark,
    streamlit_server,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with streamlit_server(tmp_path_factory.mktemp("views-store")) as url:
        yield url


def bars(page):
    """The reliability diagram's bars (its first trace: the accuracy of each bin)."""
    chart = page.locator(".js-plotly-plot").filter(has=page.locator(".barlayer")).last
    return chart.locator(".barlayer .trace").first.locator(".point")


def click_a_full_bar(page, pattern: str) -> int:
    """Click the bars from the most confident down until one holds images; its count."""
    points = bars(page)
    points.first.wait_for(state="attached", timeout=60_000)
    for k in range(points.count() - 1, -1, -1):
        points.nth(k).click(force=True)
        page.wait_for_timeout(1500)
        caption = page.get_by_text(re.compile(pattern))
        if caption.count():
            return int(re.match(r"\s*([\d.,]+)", caption.first.inner_text()).group(1)
                       .replace(",", "").replace(".", ""))  # fmt: skip
    pytest.fail("no bar of the reliability diagram opened any images")


def gallery_loaded(page, count: int) -> None:
    shown = min(count, 48)
    page.wait_for_function(
        "[...document.querySelectorAll('[data-gallery=bin] img')].filter(i => i.naturalWidth)"
        f".length === {shown}",
        timeout=30_000,
    )


def test_a_run_with_the_moving_map_then_its_calibration(server, browser):  # noqa: F811
    page, errors = open_page(browser, f"{server}/train")
    choose(page, "Dataset", "digits")
    epochs = page.get_by_role("spinbutton", name="Epochs")
    epochs.fill("4")
    epochs.press("Enter")
    page.get_by_text("Map what it learns, epoch by epoch").click()
    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_text("Finished and saved").wait_for(timeout=180_000)
    page.get_by_text("How the classes pulled apart").wait_for(timeout=30_000)
    page.get_by_text("▶ Play the epochs").first.wait_for(timeout=30_000)
    assert_clean(page, errors)

    page.goto(f"{server}/evaluate")
    page.get_by_text("How sure is it, and should it be?").wait_for(timeout=60_000)
    count = click_a_full_bar(page, r"test images with confidence from")
    gallery_loaded(page, count)
    assert_clean(page, errors)

    page.goto(f"{server}/evaluate?lang=es")  # the same, in Spanish
    page.get_by_text("¿Cómo de seguro está, y debería estarlo?").wait_for(timeout=60_000)
    count = click_a_full_bar(page, r"imágenes de prueba con confianza de")
    gallery_loaded(page, count)
    assert_clean(page, errors)
    page.close()


def test_the_pretraining_study_in_spanish(server, browser):  # noqa: F811
    page, errors = open_page(browser, f"{server}/pretraining?lang=es")
    page.get_by_text("Lo que aporta el preentrenamiento").wait_for(timeout=60_000)
    choose(page, "Conjunto de datos", "digits")
    page.get_by_text("Imágenes de entrenamiento etiquetadas por entrenamiento").wait_for()
    box = page.get_by_role("spinbutton", name="Épocas del autocodificador")
    box.fill("1")
    box.press("Enter")
    page.wait_for_timeout(1000)
    for size in ("1.000", "500"):  # digits offers 100, 500 and 1,000: keep 100, the quickest
        page.get_by_role("button", name=f"Remove {size}").click()
        page.wait_for_timeout(800)
    page.get_by_role("button", name="Entrenar lo que falta").click()
    page.get_by_text("Autocodificador ").first.wait_for(timeout=240_000)
    # Its three runs, one point per start, as they are stored (the table is a canvas).
    page.wait_for_function(
        "document.querySelectorAll('.js-plotly-plot .scatterlayer .point').length >= 3",
        timeout=300_000,
    )
    chart = page.locator(".js-plotly-plot").last
    for name in ("desde cero", "sobre el autocodificador", "sobre características de ImageNet"):
        chart.get_by_text(name).first.wait_for(timeout=15_000)  # the legend names each start
    assert_clean(page, errors)
    page.close()
