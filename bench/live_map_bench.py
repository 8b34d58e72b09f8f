"""What the moving map costs: a run trained with ``live_map`` on against the same run with it
off, as a worker trains it (``core.worker.execute``), whole run, wall time.

    .venv/bin/python bench/live_map_bench.py                 # the fast preset, 3 rounds
    .venv/bin/python bench/live_map_bench.py --preset seed002-cnn --rounds 2

Each (round, way) trains into a fresh store in its own process (nothing cached, the same
warm-up), the two ways alternating round by round (the machine's speed drifts); the figure
is the median over the rounds of (time with the map) / (time without). Prints a table, then
a JSON line. Issue 21 asks for at most 1.15.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

CHILD = """
import json, sys, threading, time
from core import presets
from core.runs import plan
from core.store import Store
from core.worker import execute

cfg = presets.get(sys.argv[1]).config
store = Store(sys.argv[2])
live = sys.argv[3] == "on"
planned = plan(cfg, store)
start = time.perf_counter()
for update in execute(planned, store, threading.Event(), map_after=False,
                      precompute_maps=False, live_map=live):
    pass
seconds = time.perf_counter() - start
meta = store.meta(update["run_id"])
print(json.dumps({"seconds": seconds, "accuracy": meta["test"]["accuracy"],
                  "epochs": len(meta["history"]["epoch"])}))
"""


def one(preset: str, live: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="live-map-bench-") as root:
        out = subprocess.run([sys.executable, "-c", CHILD, preset, root, "on" if live else "off"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fast")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    ratios = []
    print(f"{'round':>5} {'map off (s)':>12} {'map on (s)':>11} {'ratio':>6}")
    for r in range(1, args.rounds + 1):
        ways = (False, True) if r % 2 else (True, False)
        times = {live: one(args.preset, live) for live in ways}
        ratio = times[True]["seconds"] / times[False]["seconds"]
        ratios.append(ratio)
        print(f"{r:>5} {times[False]['seconds']:>12.2f} {times[True]['seconds']:>11.2f} "
              f"{ratio:>6.3f}")  # fmt: skip
    print(json.dumps({"bench": "live_map", "preset": args.preset, "ratios": ratios,
                      "median_ratio": statistics.median(ratios),
                      "epochs": times[True]["epochs"]}))  # fmt: skip


if __name__ == "__main__":
    main()
