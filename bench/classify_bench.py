"""Issue 4's figures for the classify tab, measured through its real server.

    .venv/bin/python bench/classify_bench.py [--store DIR] [--n 1000] [--calls 200]

- accuracy: Fashion-MNIST test images rendered as 280x280 RGB PNG files, as they are (light
  on dark) and inverted (dark on light, like a photo or a drawing), sent through the
  ``/classify`` API with gradio_client; the raw images' accuracy in process beside it;
- in process: reading, preprocessing and predicting one such file, ms per image;
- over HTTP: median latency of ``/classify`` against a trivial endpoint added to the same
  server (same upload, same queue, no model), calls interleaved;
- load: 50 clients calling at once, all answered.

Uses the ``fast`` preset's run (trained into a temporary store unless --store has it). Prints
one line per figure and a JSON line last.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
from gradio_client import Client, handle_file
from PIL import Image

import gradio_app
from core import data as datasets
from core import presets
from core.classify import Classifier
from core.runs import Stored, train_or_load
from core.store import Store
from core.train import predict_proba


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_pngs(folder: Path, images, invert: bool) -> list[Path]:
    paths = []
    for i, img in enumerate(images):
        big = Image.fromarray(255 - img if invert else img).resize((280, 280)).convert("RGB")
        buf = io.BytesIO()
        big.save(buf, "PNG")
        path = folder / f"{'inverted' if invert else 'as-is'}-{i:05d}.png"
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store", help="a store that may already hold the fast preset's run")
    p.add_argument("--n", type=int, default=1000, help="test images per polarity")
    p.add_argument("--calls", type=int, default=200, help="latency calls per endpoint")
    args = p.parse_args()
    store = Store(args.store or tempfile.mkdtemp(prefix="classify-bench-"))
    cfg = presets.get("fast").config
    stored = next(e for e in train_or_load(cfg, store) if isinstance(e, Stored))
    data = datasets.load(cfg.data)
    x, y = data.x_test[: args.n], data.y_test[: args.n]
    classifier = Classifier(store)
    assert classifier.best() == stored.run_id, "the store has a better run than fast's"
    model, _ = classifier.model(stored.run_id)
    raw = float((predict_proba(model, x).argmax(1) == y).mean())
    result: dict = {"n": len(y), "run": stored.run_id, "raw_accuracy": raw}
    print(f"raw test images, in process: accuracy {result['raw_accuracy']:.4f}")

    demo = gradio_app.build_demo(classifier)
    with demo:  # the baseline: same input component and upload, no model
        trivial_in = gr.Image(type="filepath", visible=False)
        trivial_out = gr.Label(visible=False)
        gr.Button(visible=False).click(lambda payload: {"?": 1.0}, trivial_in, trivial_out,
                                       api_name="trivial", preprocess=False)  # fmt: skip
    port = free_port()
    gradio_app.launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
    url = f"http://127.0.0.1:{port}/"
    client = Client(url, verbose=False)
    folder = Path(tempfile.mkdtemp(prefix="classify-bench-png-"))

    for name, invert in (("png_as_is", False), ("png_inverted", True)):
        paths = write_pngs(folder, x[:, 0], invert)
        names = [client.predict(handle_file(str(path)), api_name="/classify")["label"]
                 for path in paths]  # fmt: skip
        accuracy = sum(n == data.classes[c] for n, c in zip(names, y, strict=True)) / len(y)
        result[name] = accuracy
        print(f"{name}: accuracy through the API {accuracy:.4f}")
        started = time.perf_counter()
        for path in paths:
            classifier.predict(classifier.read(path), stored.run_id)
        ms = (time.perf_counter() - started) / len(paths) * 1000
        result[f"{name}_in_process_ms"] = ms
        print(f"{name}: read + preprocess + predict in process {ms:.2f} ms per image")

    sample = str(folder / "inverted-00000.png")
    times: dict[str, list[float]] = {"classify": [], "trivial": []}
    for _ in range(5):  # warm both paths
        for endpoint in times:
            client.predict(handle_file(sample), api_name=f"/{endpoint}")
    for _ in range(args.calls):
        for endpoint, spent in times.items():
            started = time.perf_counter()
            client.predict(handle_file(sample), api_name=f"/{endpoint}")
            spent.append(time.perf_counter() - started)
    medians = {k: statistics.median(v) * 1000 for k, v in times.items()}
    result["http_median_ms"] = medians
    result["http_ratio"] = medians["classify"] / medians["trivial"]
    print(f"HTTP median: classify {medians['classify']:.1f} ms, trivial "
          f"{medians['trivial']:.1f} ms -> {result['http_ratio']:.2f}x")  # fmt: skip

    def one(i: int) -> str:
        return Client(url, verbose=False).predict(handle_file(sample), api_name="/classify")[
            "label"
        ]

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=50) as pool:
        labels = list(pool.map(one, range(50)))
    result["fifty_clients"] = {"answered": sum(bool(label) for label in labels),
                               "seconds": time.perf_counter() - started}  # fmt: skip
    print(f"50 clients at once: {result['fifty_clients']['answered']} answered in "
          f"{result['fifty_clients']['seconds']:.1f} s")  # fmt: skip
    demo.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
