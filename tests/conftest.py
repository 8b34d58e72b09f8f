"""Shared fixtures: an isolated model store, a tiny trained run, and a command-line runner.

Every test runs with ``CNN_CLASSROOM_STORE`` pointing at a fresh temporary folder, so nothing
reads or writes the user's own store. Data comes from scikit-learn's digits or small slices
of Fashion-MNIST; training runs last a few epochs on a few hundred images.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.config import DataConfig, ModelConfig, RunConfig, TrainConfig

ROOT = Path(__file__).resolve().parent.parent  # the checkout: app.py, views/, the scripts

# A run that trains in well under a second: 256 digits, 2 epochs of the MLP.
TINY = RunConfig(
    data=DataConfig(dataset="digits", val_size=100, train_limit=256),
    model=ModelConfig("mlp"),
    train=TrainConfig(epochs=2, batch_size=64, lr=3e-3, schedule="constant", bf16="off"),
)


def fashion_available() -> bool:
    from core.data import fashion_mnist

    return fashion_mnist.find(None) is not None


needs_fashion = pytest.mark.skipif(
    not fashion_available(), reason="Fashion-MNIST is not installed (dataset-fashion-mnist)"
)


@pytest.fixture(scope="session", autouse=True)
def session_store(tmp_path_factory):
    """The same isolation for session- and module-scoped fixtures (set up before the one
    below): no fixture ever sees the user's own store."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("session-store")
        mp.setenv("CNN_CLASSROOM_STORE", str(root))
        mp.setenv("CNN_CLASSROOM_OFFLINE", "1")
        # Page tests do not start the Gradio tab; tests/test_browser.py turns it back on.
        mp.setenv("CNN_CLASSROOM_GRADIO", "off")
        # Nor a worker process ahead of a first job (each page test's queue would).
        mp.setenv("CNN_CLASSROOM_WARM_WORKER", "off")
        yield root


@pytest.fixture(autouse=True)
def end_queues():
    """Every job queue a test made stops dispatching and ends its worker processes."""
    yield
    from core.jobs import JobQueue

    for queue in list(JobQueue.instances):
        queue.shutdown()


@pytest.fixture(autouse=True)
def isolated_store(tmp_path_factory, monkeypatch) -> Path:
    """A fresh, empty default store for each test (also seen by subprocesses)."""
    root = tmp_path_factory.mktemp("store")
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(root))
    # Never wait on a download when Fashion-MNIST is missing: fall back to digits at once.
    monkeypatch.setenv("CNN_CLASSROOM_OFFLINE", "1")
    return root


@dataclass
class TinyRun:
    root: Path
    run_id: str
    meta: dict
    cfg: RunConfig


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """One tiny digits run trained once per session into its own store (treat as read-only:
    copy ``root`` before changing anything)."""
    from core.runs import Stored, train_or_load
    from core.store import Store

    root = tmp_path_factory.mktemp("tiny-store")
    events = list(train_or_load(TINY, Store(root)))
    stored = events[-1]
    assert isinstance(stored, Stored) and not stored.cache_hit
    return TinyRun(root, stored.run_id, stored.meta, TINY)


def open_page(name: str, monkeypatch, root: Path, lang: str = "en", timeout: float = 120):
    """A page of views/ in AppTest, run once, on the store at ``root`` (Streamlit's caches
    cleared, so the page sees that store), in ``lang``."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(root))
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "views" / f"{name}.py"), default_timeout=timeout)
    at.session_state["lang"] = lang
    return at.run()


def widget(at, kind: str, label: str):
    """The Train page's widget of ``kind`` ("number_input", "slider", ...) labelled
    ``label``: its keys change with each new form, its labels do not."""
    found = [w for w in getattr(at, kind) if w.label == label]
    assert len(found) == 1, (label, [w.label for w in getattr(at, kind)])
    return found[0]


def run_core(*args: str, timeout: float = 300, env: dict | None = None):
    """Run ``python -m core ARGS`` from the repository root; returns the CompletedProcess.

    The child sees this process's environment (the test's store) plus ``env``, and never
    tries to download Fashion-MNIST.
    """
    return subprocess.run(
        [sys.executable, "-m", "core", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "CNN_CLASSROOM_OFFLINE": "1", **(env or {})},
    )


@pytest.fixture
def run_cli():
    """``run_core`` as a fixture, so it runs after the store isolation is in place."""
    return run_core


def run_python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a Python snippet in a fresh interpreter from the repository root."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_head():
    """``ray start --head`` on 127.0.0.1 and a free port, as a teacher would start it (two
    CPUs); shared by the sweep and the queue tests, stopped at the end of the session."""
    ray = Path(sys.executable).with_name("ray")
    if not ray.exists():
        pytest.skip("Ray is not installed in this environment")
    port = free_port()
    temp = Path(f"/tmp/rt{os.getpid()}")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = [str(ray), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--num-cpus=2", f"--temp-dir={temp}", "--include-dashboard=false",
             "--disable-usage-stats"]  # fmt: skip
    proc = subprocess.run(start, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(ray), "stop", "--force"], capture_output=True, timeout=120, env=env)
        shutil.rmtree(temp, ignore_errors=True)


def stroke(page, canvas) -> None:
    """A student's pen stroke across a sketchpad ``canvas`` (a Playwright locator): a
    slanted line down its left half, as a trouser leg is drawn."""
    box = canvas.bounding_box()
    x0, y0 = box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.2
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, 25):
        page.mouse.move(x0 + i * 3, y0 + i * 10, steps=2)
    page.mouse.up()
