"""Issue 3's interactive figures in a real Chromium, against `streamlit run app.py`.

    .venv/bin/python bench/pages_bench.py [--store DIR]

- page switches: seconds from clicking a page in the navigation until it has finished
  rendering, with runs in the store (median and worst over all pages, twice round);
- live curves: seconds from pressing Start on a cnn_bn Fashion-MNIST run until its first
  curve is on screen;
- embeddings: seconds from opening the Embeddings page until the 10,000-point map is drawn,
  on the first view of a run and again later (every run's t-SNE map is computed right after
  it trains, by the job worker or the command line, so the page reads it from the cache).

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


def settled(page, timeout: float = 120_000) -> None:
    """Wait until Streamlit has finished the script run (no 'running' status widget)."""
    page.wait_for_timeout(150)
    page.wait_for_function("!document.querySelector('[data-testid=stStatusWidget]')",
                           timeout=timeout)  # fmt: skip


def map_drawn(page) -> None:
    """The 10,000-point map is on screen: its caption, then its legend drawn."""
    page.get_by_text(re.compile(r"10,000 points")).first.wait_for(timeout=120_000)
    page.wait_for_selector(".js-plotly-plot .legend", timeout=60_000)


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
            for name in PAGES:  # first visits: load models, data, predictions into caches
                t0 = time.perf_counter()
                page.get_by_role("link", name=name).click()
                if name == "Embeddings":  # first view: model and features load, map from cache
                    map_drawn(page)
                    summary["embeddings_first_s"] = time.perf_counter() - t0
                    print(
                        f"embeddings map on screen after {summary['embeddings_first_s']:.2f} s "
                        "(first view of the run: model and predictions load)"
                    )
                settled(page)
            switches, per_page = [], {}
            for _ in range(2):
                for name in PAGES:
                    if name == "Embeddings":
                        continue  # timed on its own below
                    t0 = time.perf_counter()
                    page.get_by_role("link", name=name).click()
                    settled(page)
                    switches.append(time.perf_counter() - t0)
                    per_page.setdefault(name, []).append(round(switches[-1], 2))
            summary["page_switch_median_s"] = statistics.median(switches)
            summary["page_switch_max_s"] = max(switches)
            summary["page_switch_s"] = per_page
            print(f"page switch with runs in the store: median {statistics.median(switches):.2f}"
                  f" s, worst {max(switches):.2f} s over {len(switches)} switches")  # fmt: skip

            t0 = time.perf_counter()
            page.get_by_role("link", name="Embeddings").click()
            map_drawn(page)
            summary["embeddings_cached_s"] = time.perf_counter() - t0
            settled(page)
            print(f"embeddings map (cached) on screen after {summary['embeddings_cached_s']:.2f} s")

            page.get_by_role("link", name="Train").click()
            settled(page)
            box = page.locator("[data-testid=stSelectbox]").filter(has_text="Model")
            box.locator("[role=combobox], input").first.click()
            page.get_by_role("option", name="cnn_bn", exact=True).click()
            settled(page)
            seed = page.get_by_role("spinbutton", name="Seed")
            seed.fill(str(int(time.time()) % 10_000))  # a run the store does not have
            seed.press("Enter")
            settled(page)
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
