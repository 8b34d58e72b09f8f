"""Issue 7's transfer-learning figure: EfficientNet-Lite0 on your own photos, from an empty store.

    .venv/bin/python bench/transfer_bench.py                       # ../shared/datasets/hymenoptera
    .venv/bin/python bench/transfer_bench.py --dataset photos.zip --seeds 0 1 2 3 4

Each seed is one whole ``python -m core train --model efficientnet_lite0 --dataset PATH``
process (the README's command, with ``--seed``) on a fresh, empty store, timed from outside:
decoding the photos, loading the weights, training, the test metrics and the t-SNE map for
the Embeddings page all count. The target (issue 7) is >= 0.95 on val/ within 90 s on 2
cores; the PyTorch transfer-learning tutorial reaches about 0.95 with ResNet-18.
Prints one line per seed and a JSON line last.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT.parent / "shared" / "datasets" / "hymenoptera"


def one_run(dataset: str, seed: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as store:
        out = Path(store) / "run.json"
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "core", "train", "--model", "efficientnet_lite0",
             "--dataset", dataset, "--seed", str(seed), "--store", store, "--json", str(out),
             "--quiet", *extra],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"seed {seed} failed:\n{done.stderr[-2000:]}")
        run = json.loads(out.read_text())
    test = run["test"]
    return {"seed": seed, "wall_seconds": round(wall, 1),
            "train_seconds": round(run["train_seconds"], 1), "accuracy": test["accuracy"],
            "macro_f1": test["macro_f1"], "support": test["support"]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default=str(DEFAULT))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("extra", nargs="*", help="more flags for python -m core train (after --)")
    args = p.parse_args()
    rows = []
    for seed in args.seeds:
        row = one_run(args.dataset, seed, args.extra)
        rows.append(row)
        print(f"seed {seed}: accuracy {row['accuracy']:.4f} on {row['support']} held-out "
              f"images, {row['wall_seconds']:.1f} s wall ({row['train_seconds']:.1f} s "
              "training)", flush=True)  # fmt: skip
    accs = [r["accuracy"] for r in rows]
    walls = [r["wall_seconds"] for r in rows]
    print(f"accuracy {min(accs):.4f}-{max(accs):.4f}, wall {min(walls):.1f}-{max(walls):.1f} s")
    print(json.dumps({"dataset": args.dataset, "runs": rows}))


if __name__ == "__main__":
    main()
