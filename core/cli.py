"""The command line: ``python -m core models | presets | train | ablate | sweep | store |
export | import | report | calibrate | class | bench``.

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

from core import UserError, schema, tasks
from core.config import ModelConfig, RunConfig, to_dict
from core.models import catalog


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

    keep = sub.add_parser("store", help="list, delete and prune the stored runs")
    actions = keep.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every stored run: model, data, score, size, age")
    delete = actions.add_parser("delete", help="delete runs and what was derived from them")
    delete.add_argument(
        "runs", nargs="+", metavar="RUN", help="run ids (python -m core store list)"
    )
    prune = actions.add_parser("prune", help="delete the runs today's code cannot rebuild "
                               "(trained under other versions) and damaged ones")  # fmt: skip
    for action in (listing, delete, prune):
        action.add_argument("--store", help="model store folder (default: the user cache)")
        action.add_argument("--json", action="store_true", dest="as_json",
                            help="print JSON (for scripts) instead of lines")  # fmt: skip

    out = sub.add_parser("export", help="one stored run as a file to carry elsewhere")
    out.add_argument("run", metavar="RUN", help="a run id (python -m core store list)")
    out.add_argument("--format", choices=("zip", "safetensors", "onnx"), default="zip",
                     help="zip: weights, metadata and test probabilities, for python -m core "
                     "import; safetensors: the weights alone; onnx: the model for other "
                     "tools, checked with onnxruntime on 1,000 test images")  # fmt: skip
    out.add_argument("--out", required=True, help="the file to write")
    out.add_argument("--store", help="model store folder (default: the user cache)")
    take = sub.add_parser("import", help="a run zip (from export) into this store")
    take.add_argument("file", metavar="FILE.zip")
    take.add_argument("--store", help="model store folder (default: the user cache)")
    rep = sub.add_parser("report", help="one run as one self-contained HTML page to print "
                         "or hand in: config, curves, scores, worst mistakes")  # fmt: skip
    rep.add_argument("run", metavar="RUN", help="a run id (python -m core store list)")
    rep.add_argument("--out", required=True, help="the HTML file to write")
    rep.add_argument("--lang", choices=("en", "es"), default="en", help="English or Spanish")
    rep.add_argument("--store", help="model store folder (default: the user cache)")
    rep.add_argument("--app-url", metavar="URL",
                     help="the app's address, for the run's link (default: $CNN_CLASSROOM_URL, "
                     "else http://localhost:8501)")  # fmt: skip

    cal = sub.add_parser("calibrate", help="how sure a run is, and should be: ECE and NLL on "
                         "the test set before and after temperature scaling")  # fmt: skip
    cal.add_argument("run", metavar="RUN", help="a classifier's run id (python -m core store list)")
    cal.add_argument("--json", action="store_true", dest="as_json",
                     help="print one JSON object: ece_before, ece_after, temperature, "
                     "nll_before, nll_after")  # fmt: skip
    cal.add_argument("--store", help="model store folder (default: the user cache)")

    room = sub.add_parser("class", help="the class: its board, its assignments, a new lesson")
    doing = room.add_subparsers(dest="action", required=True)
    board = doing.add_parser("board", help="this lesson's runs handed in, best first")
    board.add_argument("--assignment", metavar="ID",
                       help='only this assignment\'s runs ("" for free practice)')  # fmt: skip
    board.add_argument(
        "--every-run",
        action="store_true",
        help="every run handed in, not each student's best per assignment",
    )
    board.add_argument("--csv", metavar="FILE", help="write the board as CSV (for grading)")
    board.add_argument("--json", action="store_true", dest="as_json", help="print JSON")
    tasks_cmd = doing.add_parser("assignments", help="list, load (FILE) or --clear them")
    tasks_cmd.add_argument("file", nargs="?", metavar="FILE",
                           help="a JSON or YAML file (see assets/assignments/)")  # fmt: skip
    tasks_cmd.add_argument("--clear", action="store_true", help="remove every assignment")
    doing.add_parser("lesson", help="start a new lesson: the board shows what comes next")
    for action in (board, tasks_cmd, doing.choices["lesson"]):
        action.add_argument("--store", help="model store folder (default: the user cache)")

    b = sub.add_parser("bench", help="speed measurements that print a JSON last line")
    bsub = b.add_subparsers(dest="bench", required=True)
    tp = bsub.add_parser("throughput", help="steady-state training images per second")
    tp.add_argument("--model", default="cnn_bn")
    tp.add_argument("--batch-size", type=int, default=256)
    tp.add_argument("--epochs", type=int, default=2, help="epochs to time")
    tp.add_argument("--bf16", default="auto")
    ta = bsub.add_parser("time-to-accuracy", help="train a preset until the test accuracy")
    ta.add_argument("--target", type=float, default=0.90)
    ta.add_argument("--preset", help="default: the one suited to the target (the speedrun "
                    "table in the README: fast up to 0.92, best above)")  # fmt: skip
    ta.add_argument("--epochs", type=int, help="fit the preset's schedule to this many "
                    "epochs (default: its own)")  # fmt: skip
    ta.add_argument("--seed", type=int, help="weights, batch order and augmentation "
                    "(default: the preset's, 0)")  # fmt: skip
    pt = bsub.add_parser("pretraining", help="what pretraining buys: small labelled sets from "
                         "scratch, on seed 001's autoencoder, on ImageNet features")  # fmt: skip
    pt.add_argument("--labels", default="100,500,1000,5000",
                    help="labelled training images per run, e.g. 100,1000")  # fmt: skip
    pt.add_argument("--dataset", default="fashion-mnist",
                    help="fashion-mnist, digits, or a folder or zip of class folders")  # fmt: skip
    pt.add_argument("--ae-epochs", type=int, default=None,
                    help="the autoencoder's epochs (default 10; seed 001 trained 30)")  # fmt: skip
    pt.add_argument("--store", help="model store folder (default: the user cache)")
    return p


def config_flags(t: argparse.ArgumentParser) -> None:
    """The flags that describe one run (train, and the base of ablate and sweep): --model,
    --preset, and one flag per config field (core.schema), with its help and bounds."""
    t.add_argument("--model", help="registry name (see: python -m core models)")
    t.add_argument("--preset", help="start from a named configuration (see: presets)")
    for f in schema.FIELDS_LIST:
        if not f.flag:
            continue
        flag, about = "--" + f.name.replace("_", "-"), _flag_help(f)
        if f.kind == "bool":
            t.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=about)
        else:
            t.add_argument(flag, type=_reader(f), help=about, metavar=_metavar(f))


def _flag_help(f) -> str:
    about = f.help("en")
    if f.families is not None:
        about = f"{', '.join(f.families)}: {about}"
    if f.kind == "int":
        about += f" [{int(f.low):,} to {int(f.high):,}{f.unit}]"
    elif f.kind == "float":
        about += f" [{f.low:g} to {f.high:g}{f.unit}]"
    return about.replace("%", "%%")  # argparse formats help with %


def _metavar(f) -> str:
    if f.kind == "choice":
        return "{" + ",".join(f.choices) + "}"
    return {"sizes": "N[,N...]", "stages": "I[,I...]", "int": "N", "float": "X"}.get(
        f.kind, f.name.upper()
    )


def _reader(f):
    """argparse's ``type`` for field ``f``: its parser, a bad value one ``error:`` line."""

    def read(text: str):
        try:
            return f.parse(text)
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    read.__name__ = f.words  # argparse names the type in its message
    return read


def runner_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, help="runs at once on this machine (default: cores)")
    p.add_argument("--ray-address", metavar="HOST:PORT",
                   help="run on this Ray cluster through Ray Tune (ray start --head)")  # fmt: skip
    p.add_argument("--store", help="model store folder (default: the user cache)")
    p.add_argument("--json", help="write {runs: [...]} as JSON to this file")
    p.add_argument("--quiet", action="store_true", help="no line per finished run")


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
    reads = catalog.family(cfg.model.name).options
    for f in schema.FIELDS_LIST:
        if not f.flag or (value := getattr(args, f.name)) is None:
            continue
        if f.section == "model" and f.name not in reads:
            raise UserError(f"--{f.name.replace('_', '-')}: {cfg.model.name} has no such option "
                            f"(it reads {', '.join(reads) or 'none'})")  # fmt: skip
        cfg = schema.with_value(cfg, f, value)
    return recipes.sized_for(cfg)


def cmd_models(_args) -> int:
    for f in catalog.families():
        options = ", ".join(f"{k}={v}" for k, v in f.options.items())
        print(f"{f.name:<18} {f.summary}  [{options}]")
    return 0


def cmd_presets(_args) -> int:
    from core import presets

    for p in presets.PRESETS.values():
        paper = f"  (paper: {p.paper['source']}, {p.paper['accuracy']})" if p.paper else ""
        print(f"{p.name:<12} {p.config.model.name:<10} {p.summary}{paper}")
    return 0


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
        for event in train_or_load(cfg, Store(args.store), make_map=not args.no_map):
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
                result, stored_at = event, time.perf_counter()
                print(f"run {event.run_id}: "
                      + ("cache hit" if event.cache_hit else "trained and stored"))  # fmt: skip
    finally:
        _close(bar)
    if result is None:  # stopped before the end (Ctrl-C is handled in main)
        return 1
    if not result.cache_hit and not args.no_map:  # made after Stored (runs.train_or_load)
        print(f"t-SNE map of the test set for the Embeddings page: "
              f"{time.perf_counter() - stored_at:.1f} s", file=sys.stderr)  # fmt: skip
    meta = result.meta
    print(f"{meta['model']} on {meta['dataset']['name']}, test set of {meta['test']['support']}")
    print(data_line(meta))
    print("\n".join(tasks.named(meta["task"]).test_lines(meta)))
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


def cmd_store(args) -> int:
    """``store list | delete RUN... | prune``: one line per run or action (``--json``: one
    JSON document); bad input is one line and exit status 2, before anything is deleted."""
    from core.store import Store

    store = Store(args.store)
    if args.action == "list":
        return _store_list(store, args.as_json)
    gone = _checked_runs(store, args.runs) if args.action == "delete" else store.stale()
    rows = []
    for run_id in gone:
        rows.append({"run_id": run_id, "bytes": store.size(run_id)})
        store.delete(run_id)
        if not args.as_json:
            print(f"deleted {run_id} ({_mb(rows[-1]['bytes'])})")
    freed = sum(r["bytes"] for r in rows)
    if args.as_json:
        print(json.dumps({"deleted": rows, "freed_bytes": freed}))
    else:
        print(f"{len(rows)} run{'s' * (len(rows) != 1)} deleted, {_mb(freed)} freed")
    return 0


def cmd_export(args) -> int:
    from core.store import WEIGHTS, Store, atomic_write

    store = Store(args.store)
    (run_id,) = _checked_runs(store, [args.run])
    target = _output_file("--out", args.out)
    if store.meta(run_id) is None:
        raise UserError(f"run {run_id} is damaged (its files do not check out): nothing to export")
    checked = ""
    if args.format == "zip":
        store.export_zip(run_id, target)
    elif args.format == "onnx":
        from core import onnx_export

        blob, check = onnx_export.export(store, run_id)
        atomic_write(target, blob)
        checked = (f"; onnxruntime agrees on {check.images:,} test images, largest logit "
                   f"difference {check.max_abs_diff:.1e}")  # fmt: skip
    else:
        atomic_write(target, store.export_files(run_id)[WEIGHTS])
    print(f"exported {run_id} to {target} ({args.format}, {_mb(target.stat().st_size)}{checked})")
    return 0


def cmd_import(args) -> int:
    from core.store import Store

    source = Path(args.file)
    if not source.is_file():
        raise UserError(f"no file {args.file}")
    meta = Store(args.store).import_zip(source)
    print(f"imported {meta['run_id']}: {meta['model']} on {meta['dataset']['name']}, checksums "
          "verified")  # fmt: skip
    return 0


def cmd_calibrate(args) -> int:
    from core import calibration
    from core.store import Store

    store = Store(args.store)
    (run_id,) = _checked_runs(store, [args.run])
    meta = store.meta(run_id)
    if meta is None:
        raise UserError(f"run {run_id} is damaged (its files do not check out)")
    if "classes" not in meta:
        raise UserError(f"run {run_id} is an autoencoder: calibration is for classifiers")
    found = calibration.calibrate(store, run_id)
    if args.as_json:
        print(json.dumps(found))
        return 0
    temperature = found["temperature"]
    before = ("over-confident" if temperature > 1.02 else "under-confident" if temperature < 0.98
              else "about right")  # fmt: skip
    print(f"temperature {temperature:.3f} (fitted on the validation split; {before} before)")
    print(f"expected calibration error on the test set: {found['ece_before']:.4f} before, "
          f"{found['ece_after']:.4f} after")  # fmt: skip
    print(f"negative log-likelihood on the test set: {found['nll_before']:.4f} before, "
          f"{found['nll_after']:.4f} after")  # fmt: skip
    return 0


def cmd_class(args) -> int:
    from core import classroom
    from core.store import Store, atomic_write

    room = classroom.Classroom(Store(args.store))
    if args.action == "lesson":
        started = room.new_lesson()
        print(f"a new lesson started at {time.strftime('%H:%M', time.localtime(started))}: "
              "the board shows the runs handed in from now on")  # fmt: skip
        return 0
    if args.action == "assignments":
        return _class_assignments(room, args)
    rows = room.board(assignment=args.assignment, best_only=not args.every_run)
    titles = {a.id: a.text("title", "en") for a in room.assignments()}
    if args.csv:
        target = _output_file("--csv", args.csv)
        atomic_write(target, classroom.to_csv(rows, titles).encode())
        print(f"{len(rows)} run{'s' * (len(rows) != 1)} written to {target}")
        return 0
    if args.as_json:
        print(json.dumps([{k: v for k, v in r.items() if k != "owner"} for r in rows]))
        return 0
    for rank, r in enumerate(rows, 1):
        task = titles.get(r["assignment"], r["assignment"]) or "free practice"
        print(f"{rank:>3}. {r['student'][:24]:<24} {r['test_accuracy']:.4f}  F1 "
              f"{r['macro_f1']:.4f}  {r['model']:<14} {task[:32]:<32} {r['run_id']}")  # fmt: skip
    print(f"{len(rows)} run{'s' * (len(rows) != 1)} since "
          f"{_since(room.lesson_start())} in {room.store.root}")  # fmt: skip
    return 0


def _class_assignments(room, args) -> int:
    from core import assignments

    if args.clear and args.file:
        raise UserError("give a file to load, or --clear, not both")
    if args.clear:
        room.clear_assignments()
        print("assignments removed: students train freely")
        return 0
    if args.file:
        source = Path(args.file)
        if not source.is_file():
            raise UserError(f"no file {args.file}")
        with source.open("rb") as f:
            data = f.read(assignments.MAX_BYTES + 1)  # it refuses anything longer
        items = room.load_assignments(data, source.name)
        print(f"loaded {len(items)} assignment{'s' * (len(items) != 1)} from {source.name}: "
              f"{', '.join(a.id for a in items)}")  # fmt: skip
        return 0
    for a in room.assignments():
        print(f"{a.id}: {a.text('title', 'en')} (students choose {', '.join(a.free) or 'nothing'})")
    print(f"{len(room.assignments())} assignments")
    return 0


def _since(start: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(start)) if start else "the start"


def cmd_report(args) -> int:
    from core import report
    from core.store import Store, atomic_write

    store = Store(args.store)
    (run_id,) = _checked_runs(store, [args.run])
    target = _output_file("--out", args.out)
    base = args.app_url or os.environ.get(report.URL_ENV) or report.LOCAL_URL
    link = report.share_link(base, run_id, args.lang)
    atomic_write(target, report.build(store, run_id, args.lang, link).encode())
    print(f"report of {run_id} written to {target} ({target.stat().st_size / 1024:,.0f} KB)")
    return 0


def _output_file(flag: str, given: str) -> Path:
    """The file a command writes: a name in a folder that exists (UserError otherwise)."""
    target = Path(given)
    if target.is_dir() or not target.parent.is_dir():
        raise UserError(f"{flag} {given}: give a file name in a folder that exists")
    return target


def _checked_runs(store, run_ids: list[str]) -> list[str]:
    """``run_ids`` without repeats, each a stored run (UserError naming the first that is
    not: nothing is deleted then)."""
    for run_id in run_ids:
        try:
            stored = store.path(run_id).is_dir()
        except ValueError:
            raise UserError(f"{run_id!r} is not a run id (20 hex digits: see python -m core "
                            "store list)") from None  # fmt: skip
        if not stored:
            raise UserError(f"no run {run_id} in {store.root}")
    return list(dict.fromkeys(run_ids))


def _store_list(store, as_json: bool) -> int:
    now = time.time()
    rows = [r | {"age_seconds": now - r["created"]} for r in store.overview()]
    damaged = store.damaged()
    total = sum(r["bytes"] for r in rows) + sum(store.size(r) for r in damaged)
    if as_json:
        print(json.dumps({"root": str(store.root), "runs": rows, "damaged": damaged,
                          "total_bytes": total}))  # fmt: skip
        return 0
    for r in rows:
        score = (f"acc {r['accuracy']:.4f}" if r["accuracy"] is not None
                 else f"MSE {r['mse']:.4f}" if r["mse"] is not None else "-")  # fmt: skip
        print(
            f"{r['run_id']}  {r['model']:<18} {r['dataset'][:24]:<24} {score:<11} "
            f"{_mb(r['bytes']):>9}  {_age(r['age_seconds']):>8}  "
            f"{'current' if r['current'] else 'not current'}"
        )
    for run_id in damaged:
        print(f"{run_id}  damaged: its files do not check out (prune deletes it)")
    stale = sum(not r["current"] for r in rows)
    print(
        f"{len(rows)} run{'s' * (len(rows) != 1)}, {_mb(total)} in {store.root}; "
        f"{stale} not current, "
        f"{len(damaged)} damaged"
    )
    return 0


def _mb(size: int) -> str:
    return f"{size / 2**20:,.1f} MB"


def _age(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f} {unit}"
    return f"{seconds:.0f} s"


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
    from core import bench, presets

    if args.bench == "throughput":
        result = bench.throughput(args.model, args.batch_size, args.epochs, args.bf16)
    elif args.bench == "pretraining":
        return _bench_pretraining(args)
    else:
        if not 0 < args.target <= 1:
            raise UserError(f"target must be an accuracy in (0, 1] (got {args.target})")
        if args.epochs is not None and not 1 <= args.epochs <= 100:
            raise UserError(f"--epochs must be between 1 and 100 (got {args.epochs})")
        if args.preset is not None:
            presets.get(args.preset)  # an unknown name: one line, before loading any data
        if args.seed is not None and not 0 <= args.seed < 2**31:
            raise UserError(f"--seed must be between 0 and 2147483647 (got {args.seed})")
        result = bench.time_to_accuracy(args.target, args.preset, args.epochs, args.seed)
    print(json.dumps(result))
    return 0 if result.get("reached", True) else 1


def _bench_pretraining(args) -> int:
    from core import bench, pretraining
    from core import data as datasets
    from core.store import Store

    if args.ae_epochs is not None and not 1 <= args.ae_epochs <= 100:
        raise UserError(f"--ae-epochs must be between 1 and 100 (got {args.ae_epochs})")
    split = len(datasets.load(pretraining.data_of(args.dataset)).y_train)
    labels = pretraining.parse_labels(args.labels, split)
    found = bench.pretraining(labels, Store(args.store), args.dataset, args.ae_epochs)
    print(f"{'labelled':>8}  " + "  ".join(f"{s:>11}" for s in pretraining.STARTS))
    for row in found["rows"]:
        print(f"{row['labels']:>8}  " + "  ".join(f"{row[s]:>11.4f}" for s in pretraining.STARTS))
    print(f"seed 001 reported {found['seed001_accuracy']:.2f} for its fine-tuned encoder on all "
          f"60,000 labelled images")  # fmt: skip
    print(json.dumps(found))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    commands = {"models": cmd_models, "presets": cmd_presets, "train": cmd_train,
                "ablate": cmd_experiment, "sweep": cmd_experiment, "bench": cmd_bench,
                "store": cmd_store, "export": cmd_export, "import": cmd_import,
                "report": cmd_report, "class": cmd_class,
                "calibrate": cmd_calibrate}  # fmt: skip
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
