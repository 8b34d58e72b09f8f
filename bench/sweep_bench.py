"""Issue 6's sweep figures: a local sweep on both cores against one run at a time.

    .venv/bin/python bench/sweep_bench.py                 # 4 cnn_small runs, 3 epochs, 20k images
    .venv/bin/python bench/sweep_bench.py --seed002       # and seed 002's hidden-layer sweep

The same sweep runs three times from an empty store, each a whole ``python -m core sweep``
process timed from outside, back to back: one run at a time pinned to one core (as a plain
loop on one core would), ``--workers 1`` (one run at a time, each with every core through
PyTorch's threads) and the default (one worker per core, one thread each). Each worker
process pays its own start (imports, data: about 7 s here), so short sweeps gain less than
long ones. ``--seed002`` then runs seed 002's sweep (cnn_small with 1x100, 2x50 and 3x75
dense layers, 5 epochs, the whole training set) and prints each variant's test accuracy
(seed 002: all close to 0.90; the target is >= 0.885).
Prints one line per figure and a JSON line last.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core import device

ROOT = Path(__file__).resolve().parent.parent


def sweep(args: list[str], store: str, one_core: bool = False) -> tuple[list[dict], float]:
    """(the runs of one ``python -m core sweep``, its wall seconds from outside); with
    ``one_core`` the process is pinned to core 0 (Linux ``taskset``), so it sees one core."""
    out = Path(store) / "sweep.json"
    pin = ["taskset", "-c", "0"] if one_core else []
    started = time.perf_counter()
    subprocess.run([*pin, sys.executable, "-m", "core", "sweep", *args, "--store", store,
                    "--json", str(out), "--quiet"], cwd=ROOT, check=True)  # fmt: skip
    return json.loads(out.read_text())["runs"], time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="cnn_small")
    p.add_argument("--grid", default="lr=0.001|0.002|0.003|0.005")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-limit", type=int, default=20_000)
    p.add_argument("--seed002", action="store_true", help="also seed 002's full sweep")
    args = p.parse_args()
    base = ["--model", args.model, "--grid", args.grid, "--epochs", str(args.epochs),
            "--train-limit", str(args.train_limit)]  # fmt: skip
    summary: dict = {"grid": args.grid, "model": args.model}
    with tempfile.TemporaryDirectory() as core, tempfile.TemporaryDirectory() as one, \
            tempfile.TemporaryDirectory() as pool:  # fmt: skip
        single = None
        if shutil.which("taskset") and device.cores() > 1:
            _, single = sweep([*base, "--workers", "1"], core, one_core=True)
        serial_runs, serial = sweep([*base, "--workers", "1"], one)
        parallel_runs, parallel = sweep(base, pool)
    # Two threads and one thread sum in different orders: results agree closely, not bitwise.
    gap = max(abs(a["test"]["accuracy"] - b["test"]["accuracy"])
              for a, b in zip(serial_runs, parallel_runs, strict=True))  # fmt: skip
    print(f"{len(serial_runs)} runs of {args.model} ({args.grid}, {args.epochs} epochs, "
          f"{args.train_limit:,} images)")  # fmt: skip
    if single:
        print(f"  one at a time on one core:                {single:6.1f} s "
              f"-> the pool is {single / parallel:.2f}x faster")  # fmt: skip
    print(f"  one at a time, each run on every core:    {serial:6.1f} s "
          f"-> the pool is {serial / parallel:.2f}x faster")  # fmt: skip
    print(f"  the pool: one worker per core, in parallel: {parallel:4.1f} s")
    print(f"largest test-accuracy difference between the two: {gap:.4f}")
    summary |= {"one_core_seconds": single, "one_at_a_time_seconds": serial,
                "parallel_seconds": parallel, "speedup": serial / parallel,
                "speedup_over_one_core": single / parallel if single else None,
                "accuracy_gap": gap}  # fmt: skip
    if args.seed002:
        with tempfile.TemporaryDirectory() as store:
            runs, wall = sweep(["--model", "cnn_small", "--grid", "hidden=100|50,50|3x75",
                                "--epochs", "5"], store)  # fmt: skip
        for r in runs:
            print(f"seed 002 sweep, {r['name']}: test accuracy {r['test']['accuracy']:.4f}")
        print(f"seed 002 sweep: {wall:.1f} s on both cores")
        summary["seed002"] = {r["name"]: r["test"]["accuracy"] for r in runs} | {"seconds": wall}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
