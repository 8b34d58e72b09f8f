"""The command line: ``python -m core models | presets | train | bench``.

Bad input ends in one clear line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from core import UserError, seed001
from core.config import ENCODER_MODES, TUNE_MODES, ModelConfig, RunConfig, parse_sizes, to_dict

# Flags that map one-to-one onto TrainConfig fields (flag name = field name with dashes).
TRAIN_FLAGS = {
    "epochs": int,
    "batch_size": int,
    "lr": float,
    "optimizer": str,
    "momentum": float,
    "weight_decay": float,
    "l1": float,
    "l2": float,
    "label_smoothing": float,
    "schedule": str,
    "step_size": int,
    "gamma": float,
    "early_stopping": int,
    "jitter": int,
    "seed": int,
    "bf16": str,
    "device": str,
}


# Flags that map one-to-one onto ModelConfig fields.
MODEL_FLAGS = ("hidden", "dropout", "width", "latent", "pooling", "encoder", "encoder_mode",
               "stages", "kernel", "no_relu", "no_pool", "skip", "tune", "resolution")  # fmt: skip


def hidden_sizes(text: str) -> tuple[int, ...]:
    """ "100" -> (100,); "50,50" -> (50, 50); "3x75" -> (75, 75, 75) (seed 002's notation)."""
    try:
        return parse_sizes(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one ``error:`` line (main prints it), not a usage dump."""

    def error(self, message: str):
        raise UserError(f"{message} (see: {self.prog} --help)")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m core", description="CNN Classroom core")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list the model registry")
    sub.add_parser("presets", help="list the named configurations (seed papers, fast)")

    t = sub.add_parser("train", help="train a model, or answer from the store (cache hit)")
    config_flags(t)
    t.add_argument("--store", help="model store folder (default: the user cache)")
    t.add_argument("--json", help="write the result as JSON to this file")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--no-map", action="store_true",
                   help="skip the test set's t-SNE map (the Embeddings page's)")  # fmt: skip

    a = sub.add_parser("ablate", help="seed 003's ablations of a stage-built CNN")
    config_flags(a)
    a.add_argument("--only", action="append", metavar="NAME",
                   help='run only this variant (repeatable), e.g. "no ReLU 1"')  # fmt: skip
    runner_flags(a)

    s = sub.add_parser("sweep", help="train every combination of a grid of config values")
    config_flags(s)
    s.add_argument("--grid", action="append", default=[], metavar="PARAM=V1|V2",
                   help='values of one config field, e.g. "hidden=100|50,50|3x75"')  # fmt: skip
    s.add_argument("--random", type=int, metavar="N", help="train N random combinations only")
    s.add_argument("--random-seed", type=int, default=0, help="which N combinations")
    runner_flags(s)

    b = sub.add_parser("bench", help="speed measurements that print a JSON last line")
    bsub = b.add_subparsers(dest="bench", required=True)
    tp = bsub.add_parser("throughput", help="steady-state training images per second")
    tp.add_argument("--model", default="cnn_bn")
    tp.add_argument("--batch-size", type=int, default=256)
    tp.add_argument("--epochs", type=int, default=2, help="epochs to time")
    tp.add_argument("--bf16", default="auto")
    ta = bsub.add_parser("time-to-accuracy", help="train a preset until the test accuracy")
    ta.add_argument("--target", type=float, default=0.90)
    ta.add_argument("--preset", default="fast")
    return p


def config_flags(t: argparse.ArgumentParser) -> None:
    """The flags that describe one run (train, and the base of ablate and sweep)."""
    t.add_argument("--model", help="registry name (see: python -m core models)")
    t.add_argument("--preset", help="start from a named configuration (see: presets)")
    t.add_argument(
        "--dataset",
        help="fashion-mnist (default), digits, or a folder or zip of "
        "class folders (with train/ and val/ or test/ inside, or split here)",
    )
    t.add_argument("--data-dir", help="folder with Fashion-MNIST's *-ubyte.gz files")
    t.add_argument("--val-size", type=int, help="validation images held out of training")
    t.add_argument("--train-limit", type=int, help="train on the first N images only")
    t.add_argument("--image-size", type=int, help="resize images to N x N pixels")
    for name, kind in TRAIN_FLAGS.items():
        t.add_argument("--" + name.replace("_", "-"), type=kind, help=f"TrainConfig.{name}")
    t.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--oversample", action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--hidden", type=hidden_sizes, help="dense hidden sizes, e.g. 100 or 50,50")
    t.add_argument("--dropout", type=float, help="dropout probability")
    t.add_argument("--width", type=int, help="channels of the first conv layer")
    t.add_argument("--latent", type=int, help="autoencoders: latent units n")
    t.add_argument("--pooling", action=argparse.BooleanOptionalAction, default=None,
                   help="autoencoders: max-pool after each conv layer")  # fmt: skip
    t.add_argument("--encoder", help="ae_classifier: the conv_autoencoder run to start from")
    t.add_argument("--encoder-mode", choices=ENCODER_MODES,
                   help="ae_classifier: finetune (default), frozen or random")  # fmt: skip
    t.add_argument("--stages", type=hidden_sizes,
                   help="cnn_stages: channels of each conv stage, e.g. 16,32,64,128")  # fmt: skip
    t.add_argument("--kernel", type=int, help="cnn_stages: conv kernel side (odd)")
    for name, what in (("no_relu", "without their ReLU"), ("no_pool", "without pooling"),
                       ("skip", "removed whole")):  # fmt: skip
        t.add_argument("--" + name.replace("_", "-"), type=stage_numbers,
                       help=f"cnn_stages: stages (from 1) {what}, e.g. 2,3")  # fmt: skip
    t.add_argument("--tune", choices=TUNE_MODES,
                   help="backbones: train the head only (frozen), the last stage too (top, "
                   "the default) or everything (all)")  # fmt: skip
    t.add_argument(
        "--resolution",
        type=int,
        help="backbones: side the network sees (default: the images', at least 96)",
    )


def runner_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, help="runs at once on this machine (default: cores)")
    p.add_argument("--ray-address", metavar="HOST:PORT",
                   help="run on this Ray cluster through Ray Tune (ray start --head)")  # fmt: skip
    p.add_argument("--store", help="model store folder (default: the user cache)")
    p.add_argument("--json", help="write {runs: [...]} as JSON to this file")
    p.add_argument("--quiet", action="store_true", help="no line per finished run")


def stage_numbers(text: str) -> tuple[int, ...]:
    """ "2,3" -> (2, 3); "none" -> ()."""
    if text.strip().lower() in ("none", ""):
        return ()
    try:
        numbers = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"stage numbers look like 2 or 2,3,4: {text!r}") from None
    return numbers


def build_config(args: argparse.Namespace) -> RunConfig:
    """The RunConfig the flags describe: a preset (or the defaults), then each given flag."""
    from core import presets, recipes

    cfg = presets.get(args.preset).config if args.preset else RunConfig()
    if args.model:
        if args.preset and args.model != cfg.model.name:
            raise UserError(f"preset {args.preset} trains {cfg.model.name}, not {args.model}")
        if not args.preset:
            cfg = recipes.with_recipe(cfg, args.model, args.dataset or cfg.data.dataset)
        cfg = replace(cfg, model=ModelConfig(name=args.model))
    elif not args.preset:
        raise UserError("say which model to train: --model NAME or --preset NAME")
    data = {k: getattr(args, k)
            for k in ("dataset", "data_dir", "val_size", "train_limit", "image_size")}  # fmt: skip
    train = {k: getattr(args, k) for k in [*TRAIN_FLAGS, "hflip", "oversample"]}
    model = {k: getattr(args, k) for k in MODEL_FLAGS}
    cfg = RunConfig(
        data=replace(cfg.data, **{k: v for k, v in data.items() if v is not None}),
        model=replace(cfg.model, **{k: v for k, v in model.items() if v is not None}),
        train=replace(cfg.train, **{k: v for k, v in train.items() if v is not None}),
    )
    return recipes.sized_for(cfg)


def cmd_models(_args) -> int:
    from core import models

    for e in models.list_models():
        options = ", ".join(f"{k}={v}" for k, v in e.defaults.items())
        print(f"{e.name:<18} {e.summary}  [{options}]")
    return 0


def cmd_presets(_args) -> int:
    from core import presets

    for p in presets.PRESETS.values():
        paper = f"  (paper: {p.paper['source']}, {p.paper['accuracy']})" if p.paper else ""
        print(f"{p.name:<12} {p.config.model.name:<10} {p.summary}{paper}")
    return 0


def format_report(meta: dict) -> str:
    """A classification report like scikit-learn's, plus the summary numbers."""
    test = meta["test"]
    width = max(len("weighted avg"), *(len(c) for c in meta["classes"])) + 2
    lines = [f"{'':<{width}}precision    recall  f1-score   support"]
    for name, row in test["per_class"].items():
        lines.append(
            f"{name:<{width}}{row['precision']:9.4f} {row['recall']:9.4f}"
            f" {row['f1']:9.4f} {row['support']:9d}"
        )
    n = test["support"]
    lines += [
        "",
        f"{'accuracy':<{width}}{'':9} {'':9} {test['accuracy']:9.4f} {n:9d}",
        f"{'macro avg':<{width}}{test['macro_precision']:9.4f} {test['macro_recall']:9.4f}"
        f" {test['macro_f1']:9.4f} {n:9d}",
        f"{'weighted avg':<{width}}{test['weighted_precision']:9.4f}"
        f" {test['weighted_recall']:9.4f} {test['weighted_f1']:9.4f} {n:9d}",
        "",
        f"top-3 accuracy {test['top3_accuracy']:.4f}   ROC-AUC (macro, one-vs-rest) "
        + (f"{test['roc_auc_macro']:.4f}" if test["roc_auc_macro"] is not None else "n/a")
        + f"   log loss {test['log_loss']:.4f}",
    ]
    if meta.get("overfitting_epoch"):
        lines.append(f"validation loss lowest at epoch {meta['overfitting_epoch']}, then rises")
    return "\n".join(lines)


def data_line(meta: dict) -> str:
    """Where the images came from and how the classes balance in each split."""
    about = meta["dataset"]
    counts = about.get("class_counts", {})
    parts = []
    for split, n in about["sizes"].items():
        per_class = counts.get(split)
        if per_class and len(per_class) <= 12:
            names = ", ".join(f"{c} {k}" for c, k in zip(meta["classes"], per_class, strict=True))
            parts.append(f"{split} {n} ({names})")
        else:
            parts.append(f"{split} {n}")
    return f"data {about['source']}: " + "; ".join(parts)


def paper_line(model_name: str, dataset: str) -> str | None:
    from core import presets

    paper = presets.paper_for(model_name, dataset)
    return f"{paper['source']} reported accuracy {paper['accuracy']:.4f}" if paper else None


def _epoch_line(event) -> str:
    line = f"epoch {event.epoch}/{event.epochs}: train loss {event.train_loss:.4f}"
    if not math.isnan(event.train_accuracy):  # autoencoders have no accuracy
        line += f" acc {event.train_accuracy:.4f}"
    line += f" | val loss {event.val_loss:.4f}"
    if not math.isnan(event.val_accuracy):
        line += f" acc {event.val_accuracy:.4f}"
    return line + f" | {event.images_per_second:,.0f} img/s"


def cmd_train(args) -> int:
    from core.runs import Stored, Waiting, train_or_load
    from core.store import Store

    cfg = build_config(args)
    started = time.perf_counter()
    bar = None
    result = None
    try:
        for event in train_or_load(cfg, Store(args.store)):
            kind = type(event).__name__
            if isinstance(event, Waiting):
                print(f"run {event.run_id} is training in another process; waiting for it",
                      file=sys.stderr)  # fmt: skip
            elif kind == "BatchEnd" and not args.quiet:
                bar = _progress(bar, event)
            elif kind == "EpochEnd" and not args.quiet:
                print(_epoch_line(event), file=sys.stderr)
            elif kind == "Diverged":
                _close(bar)
                print(f"diverged at epoch {event.epoch}, step {event.step}: {event.reason};"
                      " nothing was stored (try a smaller --lr)", file=sys.stderr)  # fmt: skip
                _write_json(args.json, {"status": "diverged", "epoch": event.epoch,
                                        "step": event.step, "reason": event.reason,
                                        "config": to_dict(cfg)})  # fmt: skip
                return 3
            elif isinstance(event, Stored):
                result = event
    finally:
        _close(bar)
    if result is None:  # stopped before the end (Ctrl-C is handled in main)
        return 1
    meta = result.meta
    print(f"run {result.run_id}: " + ("cache hit" if result.cache_hit else "trained and stored"))
    if not result.cache_hit and not args.no_map:
        _precompute_map(cfg, result, args.store)
    print(f"{meta['model']} on {meta['dataset']['name']}, test set of {meta['test']['support']}")
    print(data_line(meta))
    if meta.get("task") == "reconstruct":
        print(f"test MSE {meta['test']['mse']:.4f} (pixels in [0, 1])")
        if line := seed001.paper_line(meta["config"]):
            print(line)
    else:
        print(format_report(meta))
        if line := paper_line(meta["model"], meta["config"]["data"]["dataset"]):
            print(line)
    _write_json(
        args.json,
        {
            "status": "ok",
            "run_id": result.run_id,
            "model": meta["model"],
            "config": meta["config"],
            "history": meta["history"],
            "test": meta["test"],
            "wall_seconds": time.perf_counter() - started,
            "train_seconds": meta["wall_seconds"],
            "cache_hit": result.cache_hit,
        },
    )
    return 0


def _precompute_map(cfg, result, store_dir) -> None:
    """The new run's t-SNE map, so the Embeddings page opens it from the cache."""
    from core import data as datasets
    from core import embed
    from core.runs import resolve
    from core.store import Store

    started = time.perf_counter()
    data = datasets.load(resolve(cfg, Store(store_dir))[0].data)
    try:
        embed.precompute(result.model, data, result.run_id, Store(store_dir).root)
    except embed.CollapsedFeatures as e:
        print(f"note: no t-SNE map: {e}", file=sys.stderr)
        return
    seconds = time.perf_counter() - started
    print(f"t-SNE map of the test set for the Embeddings page: {seconds:.1f} s", file=sys.stderr)


def _progress(bar, event):
    from tqdm import tqdm

    if bar is None or bar.desc != f"epoch {event.epoch}":
        _close(bar)
        bar = tqdm(total=event.batches, desc=f"epoch {event.epoch}", unit="batch",
                   file=sys.stderr, leave=False)  # fmt: skip
    bar.n = event.batch
    bar.set_postfix(loss=f"{event.loss:.3f}", img_s=f"{event.images_per_second:,.0f}",
                    refresh=True)  # fmt: skip
    return bar


def _close(bar) -> None:
    if bar is not None:
        bar.close()


def _check_output(path: str | None) -> None:
    """Refuse a ``--json`` file that cannot be written before anything trains (not after)."""
    if not path:
        return
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise UserError(f"--json {path} is a folder; give a file name")
    if not folder.is_dir():
        raise UserError(f"--json {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UserError(f"--json {path}: the folder {folder} cannot be written to")


def _write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=1))


def cmd_experiment(args) -> int:
    """``ablate`` and ``sweep``: build the variants, run them, print a table, write JSON."""
    from core import sweep

    base = build_config(args)
    if args.command == "ablate":
        variants = sweep.ablations(base, args.only)
    else:
        variants = sweep.grid(base, sweep.parse_grid(args.grid), args.random, args.random_seed)
    if args.workers is not None and args.workers < 1:
        raise UserError(f"workers must be at least 1 (got {args.workers})")
    where = (
        f"the Ray cluster at {args.ray_address}"
        if args.ray_address
        else ("{} worker(s) x {} thread(s) here".format(*sweep.plan(len(variants), args.workers)))
    )
    print(f"{len(variants)} runs on {where}", file=sys.stderr)
    started = time.perf_counter()

    def done(row: dict) -> None:
        if not args.quiet:
            status = row["status"]
            if status == "ok" and "accuracy" in row["test"]:
                status = f"top-1 error {row['test']['top1_error']:.4f}"
            elif status == "diverged":
                status = f"diverged at epoch {row['epoch']}: {row['reason']}"
            print(f"  {row['name']}: {status} ({row['seconds']:.1f} s)", file=sys.stderr)

    rows = sweep.run_all(variants, args.store, args.workers, args.ray_address, done)
    print(sweep.table(rows))
    wall = time.perf_counter() - started
    print(f"{len(rows)} runs in {wall:.1f} s", file=sys.stderr)
    _write_json(args.json, {"command": args.command, "base": to_dict(base), "runs": rows,
                            "wall_seconds": wall})  # fmt: skip
    return 0 if all(r["status"] in ("ok", "diverged") for r in rows) else 1


def cmd_bench(args) -> int:
    from core import bench

    if args.bench == "throughput":
        result = bench.throughput(args.model, args.batch_size, args.epochs, args.bf16)
    else:
        if not 0 < args.target <= 1:
            raise UserError(f"target must be an accuracy in (0, 1] (got {args.target})")
        result = bench.time_to_accuracy(args.target, args.preset)
    print(json.dumps(result))
    return 0 if result.get("reached", True) else 1


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    commands = {"models": cmd_models, "presets": cmd_presets, "train": cmd_train,
                "ablate": cmd_experiment, "sweep": cmd_experiment, "bench": cmd_bench}  # fmt: skip
    try:
        _check_output(getattr(args, "json", None))
        return commands[args.command](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: not enough memory for this run; try a smaller batch, model or image "
              "size", file=sys.stderr)  # fmt: skip
        return 2
    except (OSError, ValueError, RuntimeError) as e:  # a full disk, a damaged file...: one line
        from core.worker import one_line

        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    except BrokenPipeError:  # piped into head or less that quit early: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit
        return 0
