"""Thirty students against one real app on this machine, and a ``kill -9`` in the middle.

    .venv/bin/python bench/classroom.py [--students 30] [--same 20] [--kill-after 0.4]

The bench starts the app as ``make run`` does (Streamlit and its Gradio tab, 127.0.0.1,
a fresh store). Each student is a websocket session (bench/stclient.py: Streamlit's own
protocol, live fragments re-run on the server's interval as a browser does, nothing drawn):
opens Home and Train, starts a run (``--same`` of them the default ``fast`` preset, the
others a distinct small run: ``fast`` for 2 epochs with their own seed), calls the
``/classify`` API three times, visits other pages while it trains, and watches it until it
ends. When ``--kill-after`` of the distinct trainings are done, the bench kills the whole
app with SIGKILL and starts it again; every student reconnects and reopens the Train page
from the URL they had (their job; their cookie keeps their token). Then the same runs are
trained one after another alone, each a ``python -m core train`` process on a fresh store, for
``solo_sum_s``.

The teacher opens the app first (its first page pays the server's imports, 3-5 s); the
students arrive over 15 s; after the crash each comes back after a browser-like pause of
0.5-5 s. The last line is one JSON object: students, runs_done, runs_lost, wall_s (first
Start to last run ended), solo_sum_s, wall_over_solo, p95_page_s and median_page_s (every
page the students opened), classify_p95_ms (calls once a trained run exists),
classify_first_calls and classify_first_max_s (calls that came before: they wait for the
default preset to train), classify_errors (calls refused while the app was down, retried),
peak_rss_mb (the app's whole process tree), restart_s, requeued.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from app_server import ROOT, App
from stclient import Session
from websockets.exceptions import ConnectionClosed

from core.jobs import REQUEUED, JobDB
from core.store import Store

PAGES = ["evaluate", "compare", "home"]


class Student(threading.Thread):
    def __init__(self, index: int, distinct: bool, app: App, db: JobDB, class_: Class):
        super().__init__(daemon=True, name=f"student-{index}")
        self.index, self.distinct, self.app, self.db, self.class_ = index, distinct, app, db, class_
        self.query: dict = {}
        self.token = secrets.token_hex(8)  # the browser's cookie: the same after a restart
        self.job_id: str | None = None
        self.error = ""

    def connect(self, rng: random.Random | None = None) -> Session:
        """A session, once the app answers; after a crash, after a pause as a browser's
        reconnection backoff gives (so thirty do not all come back in the same instant)."""
        if rng is not None:
            time.sleep(rng.uniform(0.5, 5))
        while True:
            self.class_.up.wait()
            try:
                return Session(self.app.url, timeout=120, user=self.token)
            except OSError:
                time.sleep(0.5)

    def page(self, s: Session, name: str) -> None:
        seconds = s.open(name, **self.query)
        self.class_.page_times.append(seconds)
        self.class_.by_page.setdefault(name or "home", []).append(seconds)
        self.query = {k: v for k, v in s.query.items() if k in ("job", "lang")}

    def run(self) -> None:
        rng = random.Random(self.index)
        time.sleep(rng.uniform(0, 15))  # a class opens the app over a few seconds
        try:
            self._run(rng)
        except Exception as e:  # noqa: BLE001 - reported in the summary, not a crash
            self.error = f"{type(e).__name__}: {e}"

    def _run(self, rng: random.Random) -> None:
        s = self.connect()
        try:
            self.page(s, "")
            self.page(s, "train")
        except (OSError, TimeoutError, EOFError, ConnectionClosed):  # killed as they came
            s = self.connect(rng)
            self.page(s, "train")
        s.set("Start from", "fast")
        if self.distinct:
            s.set("Epochs", 2)
            s.set("Seed", 100 + self.index)
        self.class_.first_start.setdefault("t", time.perf_counter())
        s.click("Start")
        self.query = {k: v for k, v in s.query.items() if k in ("job", "lang")}
        self.job_id = self.query.get("job")
        if self.job_id is None:
            raise RuntimeError("Start queued no job: " + s.text()[-300:])
        calls = sorted(rng.uniform(0, 30) for _ in range(3))
        t0, next_visit = time.monotonic(), time.monotonic() + rng.uniform(4, 8)
        while True:
            job = self.db.get(self.job_id)
            if job is not None and job.is_final:
                self.class_.ended.append(time.perf_counter())
                return
            try:
                if calls and time.monotonic() - t0 > calls[0]:
                    calls.pop(0)
                    self.class_.classify()
                if time.monotonic() > next_visit:  # another page, then back to the run
                    self.page(s, rng.choice(PAGES))
                    self.page(s, "train")
                    next_visit = time.monotonic() + rng.uniform(6, 12)
                s.tick()
                time.sleep(0.1)
            except (OSError, TimeoutError, EOFError, ConnectionClosed):  # killed: come back
                s = self.connect(rng)
                self.page(s, "train")


class Class:
    def __init__(self, app: App, image: Path):
        self.app, self.image = app, image
        self.up = threading.Event()
        self.page_times: list[float] = []
        self.by_page: dict[str, list[float]] = {}
        self.classify_ms: list[float] = []  # once a trained run exists
        self.classify_wait_ms: list[float] = []  # the first calls, waiting for one
        self.model_ready = threading.Event()
        self.classify_errors = 0
        self.first_start: dict = {}
        self.ended: list[float] = []
        self._clients: dict = {}
        self._lock = threading.Lock()

    def classify(self) -> None:
        from gradio_client import handle_file

        for _ in range(20):
            self.up.wait()
            try:
                client = self._client()
                ready = self.model_ready.is_set()
                started = time.perf_counter()
                client.predict(handle_file(str(self.image)), api_name="/classify")
                ms = 1000 * (time.perf_counter() - started)
                # Calls before any run is stored wait for the default preset to train.
                (self.classify_ms if ready else self.classify_wait_ms).append(ms)
                return
            except Exception:  # noqa: BLE001 - the app down: counted, retried
                with self._lock:
                    self.classify_errors += 1
                    self._clients.pop(threading.get_ident(), None)
                time.sleep(1)

    def _client(self):
        from gradio_client import Client

        key = threading.get_ident()
        with self._lock:
            client = self._clients.get(key)
        if client is None:
            client = Client(f"http://127.0.0.1:{self.app.gradio_port}/", verbose=False)
            with self._lock:
                self._clients[key] = client
        return client


def shoe_png(path: Path) -> Path:
    """A Fashion-MNIST test image (an ankle boot), enlarged as a photo would be."""
    from PIL import Image

    from core import data as datasets
    from core.config import DataConfig

    x = datasets.load(DataConfig()).x_test[0, 0]
    Image.fromarray(x).resize((280, 280)).save(path)
    return path


def solo(configs: list[list[str]], scratch: Path) -> tuple[float, float]:
    """The same runs one after another alone, a command-line process each on one store:
    (their whole wall time, the part of it their trainers report)."""
    store = scratch / "solo-store"
    total = training = 0.0
    for args in configs:
        started = time.perf_counter()
        out = scratch / "solo.json"
        subprocess.run([sys.executable, "-m", "core", "train", *args, "--store", str(store),
                        "--quiet", "--no-map", "--json", str(out)], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        total += time.perf_counter() - started
        result = json.loads(out.read_text())
        training += 0.0 if result["cache_hit"] else result["train_seconds"]
    return total, training


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 \
        else values[0]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--students", type=int, default=30)
    p.add_argument("--same", type=int, default=20, help="students running the same preset")
    p.add_argument(
        "--kill-after",
        type=float,
        default=0.4,
        help="share of the distinct runs done when the app is killed",
    )
    args = p.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="cnn-classroom-class-"))
    store = scratch / "store"
    app = App(str(store))
    db = JobDB(store)
    klass = Class(app, shoe_png(scratch / "shoe.png"))
    print(f"starting the app on {app.url} (store {store})", file=sys.stderr)
    app.start()
    teacher = Session(app.url, timeout=120)
    teacher_s = teacher.open("")  # the teacher opens the app first, on the projector
    klass.up.set()
    students = [Student(i, i >= args.same, app, db, klass) for i in range(args.students)]
    peak = [0.0]
    done_watch = threading.Event()

    def sample() -> None:
        while not done_watch.is_set():
            peak[0] = max(peak[0], app.rss_mb())
            time.sleep(0.5)

    threading.Thread(target=sample, daemon=True).start()
    for s in students:
        s.start()
    distinct = args.students - args.same
    kill_at = max(1, round(args.kill_after * distinct))
    restart_s = 0.0
    while any(s.is_alive() for s in students):
        if not klass.model_ready.is_set() and any(Store(store).list()):
            klass.model_ready.set()
        trained = [j for j in (db.get(s.job_id) for s in students if s.job_id)
                   if j and j.state == "done" and not j.cache_hit]  # fmt: skip
        running = [
            j
            for j in (db.get(s.job_id) for s in students if s.job_id)
            if j and j.state == "running" and j.progress.get("epoch", 0) >= 2
        ]
        if not restart_s and len(trained) >= kill_at and running:  # in the middle of a run
            print(f"kill -9 of the app after {len(trained)} trainings, during "
                  f"{running[0].id}'s second epoch", file=sys.stderr)  # fmt: skip
            klass.up.clear()
            app.kill()
            restart_s = app.start()
            teacher = Session(app.url, timeout=120)  # the projector's page reconnects
            teacher.open("")
            klass.up.set()
        time.sleep(0.5)
    done_watch.set()
    wall = max(klass.ended) - klass.first_start["t"] if klass.ended else float("nan")
    app.kill()

    jobs = [db.get(s.job_id) if s.job_id else None for s in students]
    requeued = sum(1 for j in jobs if j is not None and j.message == REQUEUED)
    runs_done = sum(1 for j in jobs if j is not None and j.state == "done")
    runs_lost = args.students - runs_done  # failed, stopped, missing, or never queued
    configs = [["--preset", "fast"] if not s.distinct else
               ["--preset", "fast", "--epochs", "2", "--seed", str(100 + s.index)]
               for s in students]  # fmt: skip
    print("training the same runs one after another alone...", file=sys.stderr)
    solo_sum, solo_train = solo(configs, scratch)
    errors = [s.error for s in students if s.error]
    summary = {
        "students": args.students,
        "runs_done": runs_done,
        "runs_lost": runs_lost,
        "wall_s": round(wall, 1),
        "solo_sum_s": round(solo_sum, 1),
        "wall_over_solo": round(wall / solo_sum, 3),
        "solo_train_s": round(solo_train, 1),
        "app_train_s": round(
            sum(
                Store(store).meta(j.run_id)["wall_seconds"]
                for j in jobs
                if j and j.run_id and not j.cache_hit
            ),
            1,
        ),
        "p95_page_s": round(pct(klass.page_times, 95), 2),
        "median_page_s": round(statistics.median(klass.page_times), 2),
        "pages": len(klass.page_times),
        "p95_page_s_by_page": {k: round(pct(v, 95), 2) for k, v in sorted(klass.by_page.items())},
        "classify_p95_ms": round(pct(klass.classify_ms, 95), 1),
        "classify_calls": len(klass.classify_ms),
        "classify_first_calls": len(klass.classify_wait_ms),
        "classify_first_max_s": round(max(klass.classify_wait_ms, default=0) / 1000, 1),
        "teacher_first_page_s": round(teacher_s, 2),
        "classify_errors": klass.classify_errors,
        "peak_rss_mb": round(peak[0]),
        "restart_s": round(restart_s, 1),
        "requeued": requeued,
        "student_errors": errors[:3],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
