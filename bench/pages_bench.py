"""Issue 3's interactive figures in a real Chromium, against `streamlit run app.py`.

    .venv/bin/python bench/pages_bench.py [--store DIR]

- page switches: seconds from clicking a page in the navigation until its script run has
  finished (Streamlit's own run state, watched in the page), with runs in the store (median
  and worst over all pages, twice round, after a first visit of each);
- live curves: seconds from pressing Start on a cnn_bn Fashion-MNIST run until its first
  curve is on screen;
- embeddings: seconds from opening the Embeddings page until the 10,000-point map is drawn:
  first straight from the home page of a fresh server and browser, then again after the
  other pages (every run's t-SNE map is computed right after it trains, by the job worker
  or the command line, so the page reads it from the cache).

Prints one line per figure and a JSON summary last. Needs Debian's chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip
PAGES = ["Home", "Train", "Evaluate", "Compare", "Embeddings", "Inside the network"]


def serve(store: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1"],
        cwd=ROOT, env=dict(os.environ, CNN_CLASSROOM_STORE=store),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    sys.exit("the server did not start")


# Streamlit marks its root element with the script's state ("running", "notRunning", ...).
# An observer counts finished runs: a click's run may start and end between two polls, and
# the state alone cannot tell "not started yet" from "already done".
WATCH_RUNS = """() => {
    if (window.benchRunsDone !== undefined) return;
    const app = document.querySelector('[data-testid=stApp]');
    window.benchRunsDone = 0;
    new MutationObserver(records => {
        for (const r of records) if (r.oldValue === 'running') window.benchRunsDone++;
    }).observe(app, {attributes: true, attributeOldValue: true,
                     attributeFilter: ['data-test-script-state']});
}"""
RUN_FINISHED = """n => window.benchRunsDone > n && document.querySelector('[data-testid=stApp]')
    .getAttribute('data-test-script-state') === 'notRunning'"""


def settled(page, timeout: float = 120_000) -> None:
    """Wait until no script run is going (the first page load's included)."""
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]",
                           timeout=timeout)  # fmt: skip
    page.evaluate(WATCH_RUNS)


def click_and_settle(page, link: str, timeout: float = 120_000) -> None:
    """Click a navigation link and wait until the page's script run has finished."""
    done = page.evaluate("window.benchRunsDone")
    page.get_by_role("link", name=link).click()
    page.wait_for_function(RUN_FINISHED, arg=done, timeout=timeout)


def map_drawn(page) -> None:
    """The 10,000-point map is on screen: its caption, then its legend drawn."""
    page.get_by_text(re.compile(r"10,000 points")).first.wait_for(timeout=120_000)
    page.wait_for_selector(".js-plotly-plot .legend", timeout=60_000)


def open_map(page) -> float:
    """Seconds from clicking Embeddings until its map is drawn (then its run finishes)."""
    done = page.evaluate("window.benchRunsDone")
    t0 = time.perf_counter()
    page.get_by_role("link", name="Embeddings").click()
    map_drawn(page)
    seconds = time.perf_counter() - t0
    page.wait_for_function(RUN_FINISHED, arg=done, timeout=120_000)
    return seconds


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store", help="a store with runs in it (default: train two into a temp one)")
    args = p.parse_args()
    store = args.store or tempfile.mkdtemp(prefix="pages-bench-")
    if not args.store:
        for preset in ("fast", "seed000-mlp"):
            subprocess.run([sys.executable, "-m", "core", "train", "--preset", preset, "--store",
                            store, "--quiet"], cwd=ROOT, check=True)  # fmt: skip
    from playwright.sync_api import sync_playwright

    proc, url = serve(store)
    summary: dict = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            settled(page)
            # Straight from the home page to the map: a fresh server and browser, so the
            # run's data and predictions load and the browser builds its first WebGL plot.
            summary["embeddings_first_s"] = open_map(page)
            print(f"embeddings map on screen after {summary['embeddings_first_s']:.2f} s "
                  "(fresh server, straight from the home page)")  # fmt: skip
            firsts = {}
            for name in PAGES:  # first visits: models, data, predictions load into caches
                t0 = time.perf_counter()
                click_and_settle(page, name)
                firsts[name] = round(time.perf_counter() - t0, 2)
            summary["first_visit_s"] = firsts
            print(f"first visits (script run finished): {firsts}")
            switches, per_page = [], {}
            for _ in range(2):
                for name in PAGES:
                    t0 = time.perf_counter()
                    click_and_settle(page, name)
                    switches.append(time.perf_counter() - t0)
                    per_page.setdefault(name, []).append(round(switches[-1], 2))
            summary["page_switch_median_s"] = statistics.median(switches)
            summary["page_switch_max_s"] = max(switches)
            summary["page_switch_s"] = per_page
            print(
                f"page switch with runs in the store: median {statistics.median(switches):.2f}"
                f" s, worst {max(switches):.2f} s over {len(switches)} switches {per_page}"
            )

            click_and_settle(page, "Home")
            summary["embeddings_again_s"] = open_map(page)
            print(f"embeddings map on screen after {summary['embeddings_again_s']:.2f} s (again)")

            click_and_settle(page, "Train")
            box = page.locator("[data-testid=stSelectbox]").filter(has_text="Model")
            if box.locator("input").first.input_value() != "cnn_bn":  # the same one reruns nothing
                box.locator("[role=combobox], input").first.click()
                done = page.evaluate("window.benchRunsDone")
                page.get_by_role("option", name="cnn_bn", exact=True).click()
                page.wait_for_function(RUN_FINISHED, arg=done, timeout=120_000)
            seed = page.get_by_role("spinbutton", name="Seed")
            done = page.evaluate("window.benchRunsDone")
            seed.fill(str(int(time.time()) % 10_000))  # a run the store does not have
            seed.press("Enter")
            page.wait_for_function(RUN_FINISHED, arg=done, timeout=120_000)
            t0 = time.perf_counter()
            page.get_by_role("button", name="Start", exact=True).click()
            # Curves, not just axes: a drawn line in the plot.
            page.wait_for_selector(".js-plotly-plot .scatterlayer .trace path.js-line",
                                   timeout=60_000)  # fmt: skip
            summary["first_live_curve_s"] = time.perf_counter() - t0
            print(f"cnn_bn run: first live curve {summary['first_live_curve_s']:.2f} s after Start")
            page.get_by_role("button", name="Stop", exact=True).click()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
