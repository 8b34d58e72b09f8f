"""Issue 3's embedding figures: our t-SNE and UMAP against scikit-learn's TSNE, side by side.

    .venv/bin/python bench/embed_bench.py               # a `fast` run's features (trains one)
    .venv/bin/python bench/embed_bench.py --pixels      # raw pixels instead
    .venv/bin/python bench/embed_bench.py --store DIR   # reuse (or keep) the trained run

All three maps embed the same points: the 10,000 Fashion-MNIST test images (fewer with --n, or
when only scikit-learn's digits are installed). scikit-learn is handed our 50-dimension PCA
for free, so its figure is pure t-SNE time while ours include the PCA. Each map's quality is
its 10-nearest-neighbour class accuracy (how often a point's neighbours on the map share its
class). Prints one line per figure and a JSON summary last.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np

from core import data as datasets
from core import embed
from core.config import DataConfig


def knn_accuracy(coords: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Share of points whose k nearest map neighbours vote for their own class."""
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(return_distance=False)
    votes = np.array([np.bincount(row, minlength=y.max() + 1).argmax() for row in y[idx]])
    return float((votes == y).mean())


def trained_features(store_root: str, images: np.ndarray) -> tuple[np.ndarray, str, float]:
    """(features of the preset `fast` run, its run id, seconds for the forward pass)."""
    from core.presets import PRESETS
    from core.runs import Stored, train_or_load
    from core.store import Store

    store = Store(store_root)
    stored = [e for e in train_or_load(PRESETS["fast"].config, store) if isinstance(e, Stored)]
    if not stored:
        sys.exit("the fast preset diverged: no model to take features from")
    model, _ = store.load_model(stored[0].run_id)
    t0 = time.perf_counter()
    feats = embed.features(model, images)
    return feats, stored[0].run_id, time.perf_counter() - t0


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pixels", action="store_true", help="raw pixels instead of a run's features")
    p.add_argument("--store", help="model store for the fast run (default: a temporary one)")
    p.add_argument("--n", type=int, default=10_000, help="test points to embed")
    p.add_argument("--skip-sklearn", action="store_true", help="ours only (no ratio)")
    args = p.parse_args()

    data = datasets.load(DataConfig())
    images, y = data.x_test[: args.n], data.y_test[: args.n]
    if args.pixels:
        x, source, feature_seconds = embed.pixels(images), "raw pixels", 0.0
    else:
        with tempfile.TemporaryDirectory() as tmp:
            x, run_id, feature_seconds = trained_features(args.store or tmp, images)
        source = f"penultimate features of the fast run {run_id}"
    print(f"{len(x)} points of {data.name}, {source}: {x.shape[1]} dimensions; "
          f"features {feature_seconds:.2f} s")  # fmt: skip

    ours, tsne_seconds = timed(embed.tsne, x)
    line = "{:24} {:7.2f} s   10-NN accuracy {:.3f}"
    print(line.format("openTSNE (ours)", tsne_seconds, knn_accuracy(ours, y)))
    umapped, umap_seconds = timed(embed.umap, x)
    print(line.format("UMAP (ours, first call)", umap_seconds, knn_accuracy(umapped, y)))
    summary = {
        "points": len(x),
        "dataset": data.name,
        "features": source,
        "dimensions": int(x.shape[1]),
        "cores": embed.cores(),
        "feature_seconds": round(feature_seconds, 3),
        "tsne_seconds": round(tsne_seconds, 3),
        "umap_seconds": round(umap_seconds, 3),
        # a cache miss on the page: features, then the t-SNE (dataset and model already loaded)
        "screen_seconds_tsne": round(feature_seconds + tsne_seconds, 3),
        "tsne_knn_accuracy": knn_accuracy(ours, y),
        "umap_knn_accuracy": knn_accuracy(umapped, y),
        "tsne_params": embed.TSNE_PARAMS,
    }
    if not args.skip_sklearn:
        from sklearn.manifold import TSNE

        reduced = embed.pca(x, embed.PCA_DIMS) if x.shape[1] > embed.PCA_DIMS else x
        sk = TSNE(2, perplexity=30, init="pca", random_state=0, n_jobs=embed.cores())
        theirs, sk_seconds = timed(sk.fit_transform, reduced)
        print(line.format("scikit-learn TSNE", sk_seconds, knn_accuracy(theirs, y)))
        print(f"scikit-learn / ours: t-SNE {sk_seconds / tsne_seconds:.1f}x, "
              f"UMAP {sk_seconds / umap_seconds:.1f}x")  # fmt: skip
        summary |= {
            "sklearn_tsne_seconds": round(sk_seconds, 3),
            "sklearn_knn_accuracy": knn_accuracy(theirs, y),
            "ratio_sklearn_over_tsne": round(sk_seconds / tsne_seconds, 2),
            "ratio_sklearn_over_umap": round(sk_seconds / umap_seconds, 2),
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
