"""In-app training against the command line: the same config, side by side, in one run.

    .venv/bin/python bench/inapp.py [--rounds 3] [--epochs 2] [--model cnn_bn] [--browser]
                                    [--every 0.5,1.0]

Each round trains the config twice, each time on a fresh store: once with
``python -m core train``, once from the app's Train page (the app started as ``make run``
starts it, its Gradio tab included) with the page open on the live run the whole time. The
page is a websocket session (bench/stclient.py) that re-runs the live fragment on the
server's interval, as a browser does, so the figure counts the page's server-side work (its
reruns and polling); ``--browser`` watches with a real headless Chromium instead, whose own
drawing then shares this machine's two cores too (in a class it happens on each student's
computer). The two runs are checked to have the same run id (the same config).

Per round: the trainer's images/s of both (each measured by the trainer itself over its
epochs), their ratio, the server's (and the browser's) CPU seconds while the app's run
trains, and the page's fragment reruns. The last line is one JSON object with the median ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from app_server import ROOT, App
from stclient import Session

from core.jobs import JobDB
from core.store import Store


def command_line(model: str, epochs: int, scratch: Path) -> dict:
    store, out = Path(tempfile.mkdtemp(dir=scratch)), scratch / "cli.json"
    subprocess.run([sys.executable, "-m", "core", "train", "--model", model, "--epochs",
                    str(epochs), "--store", str(store), "--json", str(out), "--quiet",
                    "--no-map"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    result = json.loads(out.read_text())
    meta = Store(store).meta(result["run_id"])
    return {"run_id": result["run_id"], "images_per_second": meta["images_per_second"]}


def browser_cpu_seconds() -> float:
    """CPU time (user + system) of every Chromium process on the machine, so far."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, fields = stat.read_text().split(") ", 1)
        except OSError:
            continue
        if "chrom" in name.rsplit("(", 1)[-1]:
            values = fields.split()
            total += (int(values[11]) + int(values[12])) / os.sysconf("SC_CLK_TCK")
    return total


def in_app(model: str, epochs: int, scratch: Path, browser: bool, every: float) -> dict:
    store = Path(tempfile.mkdtemp(dir=scratch))
    app = App(str(store), env={"CNN_CLASSROOM_LIVE_EVERY": str(every)})
    app.start()
    try:
        s = Session(app.url, timeout=120)
        s.open("train")  # the server's first view starts its worker and its cache warming
        time.sleep(15)  # both done, as when a teacher opened the app before the class
        s.set("Model", model)
        s.set("Epochs", epochs)
        done = threading.Event()
        if browser:
            job_id, watcher = _watch_in_chromium(app.url, model, epochs, done)
            s.close()
        else:
            s.click("Start")
            job_id = s.query["job"]
        db = JobDB(store)
        # CPU is counted from the moment the job trains (the browser's own start and page
        # load come before it and slow nothing the trainer measures).
        since = None  # (time, server CPU, browser CPU) when the job started running
        while not (job := db.get(job_id)).is_final:
            if since is None and job.state == "running":
                since = time.perf_counter(), app.cpu_seconds(), browser_cpu_seconds()
            if not browser:
                s.tick()
            time.sleep(0.05)
        since = since or (time.perf_counter(), app.cpu_seconds(), browser_cpu_seconds())
        seconds, cpu = time.perf_counter() - since[0], app.cpu_seconds() - since[1]
        drawn = browser_cpu_seconds() - since[2]
        done.set()  # this round's browser closes (it would poll a dead server otherwise)
        if browser:  # and is gone before Python exits (a live Playwright thread crashes it)
            watcher.join(60)
        meta = Store(store).meta(job.run_id)
        return {"run_id": job.run_id, "images_per_second": meta["images_per_second"],
                "server_cpu_s": cpu, "seconds": seconds, "browser_cpu_s": drawn,
                "fragment_reruns": 0 if browser else s.fragment_runs}  # fmt: skip
    finally:
        app.kill()


def _watch_in_chromium(url: str, model: str, epochs: int,
                       done: threading.Event) -> tuple[str, threading.Thread]:  # fmt: skip
    """Open the Train page in headless Chromium, set the model and epochs, press Start,
    and keep the page open (in a thread) until ``done``; the job id and that thread."""
    from playwright.sync_api import sync_playwright

    ready, box = threading.Event(), {}

    def watch() -> None:
        try:
            follow()
        except Exception as e:  # noqa: BLE001 - said in the main thread
            box["error"] = f"{type(e).__name__}: {e}"
            ready.set()

    def follow() -> None:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--headless", "--no-sandbox", "--disable-gpu"],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/train")
            page.get_by_text("Start from").first.wait_for(timeout=60_000)
            if model != "cnn_bn":  # the form's default
                picker = page.locator("[data-testid=stSelectbox]").filter(has_text="Model")
                picker.locator("[role=combobox], input").first.click()
                page.get_by_role("option", name=model, exact=True).click()
            epochs_box = page.get_by_role("spinbutton", name="Epochs")
            epochs_box.fill(str(epochs))
            epochs_box.press("Enter")
            page.wait_for_timeout(1500)
            page.get_by_role("button", name="Start", exact=True).click()
            page.wait_for_url("**job=*", timeout=60_000)
            box["job"] = page.url.split("job=")[1].split("&")[0]
            ready.set()
            while not done.wait(0.2):
                page.wait_for_timeout(50)  # playwright's own loop keeps serving the page
            browser.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ready.wait(180)
    if "job" not in box:
        sys.exit(f"the browser could not start the run: {box.get('error', 'timed out')}")
    return box["job"], watcher


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--model", default="cnn_bn")
    p.add_argument("--browser", action="store_true", help="watch in a real headless Chromium")
    p.add_argument("--every", default="1.0",
                   help="the live page's redraw interval(s) in seconds, e.g. 0.5,1.0: each "
                        "round trains once per interval (CNN_CLASSROOM_LIVE_EVERY)")  # fmt: skip
    args = p.parse_args()
    intervals = [float(x) for x in args.every.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix="cnn-classroom-inapp-"))
    ratios: dict[float, list[float]] = {every: [] for every in intervals}
    for r in range(1, args.rounds + 1):
        cli = command_line(args.model, args.epochs, scratch)
        for every in intervals:
            app = in_app(args.model, args.epochs, scratch, args.browser, every)
            if cli["run_id"] != app["run_id"]:
                sys.exit(f"not the same config: {cli['run_id']} against {app['run_id']}")
            ratio = app["images_per_second"] / cli["images_per_second"]
            ratios[every].append(ratio)
            print(f"round {r}, redraw every {every:g} s: command line "
                  f"{cli['images_per_second']:,.0f} img/s, in the app "
                  f"{app['images_per_second']:,.0f} img/s ({ratio:.3f}x); over "
                  f"{app['seconds']:.1f} s the server used {app['server_cpu_s']:.1f} s of CPU, "
                  f"the browser {app['browser_cpu_s']:.1f} s; "
                  f"{app['fragment_reruns']} fragment reruns", flush=True)  # fmt: skip
    print(json.dumps({"model": args.model, "epochs": args.epochs, "browser": args.browser,
                      "ratios": {str(e): [round(x, 3) for x in v] for e, v in ratios.items()},
                      "median_ratio": {str(e): round(statistics.median(v), 3)
                                       for e, v in ratios.items()}}))  # fmt: skip


if __name__ == "__main__":
    main()
