"""Issue 2's speed figures, measured side by side with the quickstart baseline.

    .venv/bin/python bench/speed.py            # everything (about 6 minutes on 2 cores)
    .venv/bin/python bench/speed.py --skip-recipe   # without seed 002's 90-second recipe

Prints one line per figure and a JSON summary last. Every figure is a whole subprocess timed
from outside (a cold start: interpreter, imports, data, training), each pair in the same
minute, because these machines are shared and noisy: the throughput pair is run
``--rounds`` times (3) and the median of the pairs' ratios is the figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def run(args: list[str]) -> tuple[dict, float]:
    """(the JSON last line a command printed, its wall seconds from outside)."""
    t0 = time.perf_counter()
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    return json.loads(out.stdout.strip().splitlines()[-1]), wall


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--skip-recipe", action="store_true", help="skip seed 002's slow recipe")
    p.add_argument("--rounds", type=int, default=3, help="throughput pairs (median ratio)")
    args = p.parse_args()
    summary = {}

    pairs = []
    for _ in range(args.rounds):  # each pair back to back: the machine's speed drifts
        base, _ = run([PY, "bench/quickstart.py", "throughput", "--model", "cnn_bn"])
        ours, _ = run([PY, "-m", "core", "bench", "throughput", "--model", "cnn_bn"])
        ratio = ours["images_per_second"] / base["images_per_second"]
        print(f"cnn_bn training: quickstart loop {base['images_per_second']:,.0f} img/s, "
              f"ours {ours['images_per_second']:,.0f} img/s -> {ratio:.2f}x")  # fmt: skip
        pairs.append({"quickstart": base, "ours": ours, "ratio": ratio})
    median = statistics.median(pair["ratio"] for pair in pairs)
    if len(pairs) > 1:
        print(f"cnn_bn training: median ratio over {len(pairs)} pairs {median:.2f}x")
    summary["cnn_bn_throughput"] = {"pairs": pairs, "median_ratio": median}

    fast, fast_wall = run([PY, "-m", "core", "bench", "time-to-accuracy", "--target", "0.90"])
    print(f"fast preset to {fast['test_accuracy']:.4f} test accuracy: {fast_wall:.1f} s "
          f"whole process ({fast['epochs']} epochs)")  # fmt: skip
    summary["time_to_90"] = {"ours": fast, "ours_process_seconds": fast_wall}
    if not args.skip_recipe:
        recipe, recipe_wall = run([PY, "bench/quickstart.py", "time-to-accuracy",
                                   "--model", "cnn_small", "--batch-size", "32"])  # fmt: skip
        print(f"seed 002 recipe in the quickstart loop to {recipe['test_accuracy']:.4f}: "
              f"{recipe_wall:.1f} s ({recipe['epochs']} epochs) -> ours is "
              f"{recipe_wall / fast_wall:.1f}x faster")  # fmt: skip
        summary["time_to_90"] |= {"seed002_quickstart": recipe,
                                  "seed002_process_seconds": recipe_wall,
                                  "speedup": recipe_wall / fast_wall}  # fmt: skip

    with tempfile.TemporaryDirectory() as store:
        cmd = [PY, "-m", "core", "train", "--preset", "fast", "--store", store, "--quiet"]
        subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
        hit = time.perf_counter() - t0
    print(f"second identical train: {hit:.2f} s ({'cache hit' in out.stdout and 'cache hit'})")
    summary["cache_hit_seconds"] = hit
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
