"""Seed 003's ablations and seeds 001/002's sweeps: the stage-built CNN, building variants,
running them locally (in parallel) and on a Ray cluster, and the command line. Tiny digits
runs; seed 002's full sweep and the parallel speed-up are measured by bench/sweep_bench.py."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
import torch
from conftest import free_port

from core import UserError, models, sweep
from core.config import DataConfig, ModelConfig, RunConfig, TrainConfig, from_dict, to_dict
from core.models.base import InputSpec

DIGITS = DataConfig(dataset="digits", val_size=100, train_limit=256)
FAST = TrainConfig(epochs=1, batch_size=64, lr=3e-3, schedule="constant", bf16="off")
STAGES = RunConfig(DIGITS, ModelConfig("cnn_stages", stages=(4, 8, 8, 8)), FAST)
TINY_MLP = RunConfig(DIGITS, ModelConfig("mlp", hidden=(16,)), FAST)
DIGIT_FLAGS = ["--dataset", "digits", "--val-size", "100", "--train-limit", "256",
               "--epochs", "1", "--batch-size", "64", "--lr", "0.003", "--schedule", "constant",
               "--bf16", "off"]  # fmt: skip


# -- the stage-built network ---------------------------------------------------------------
@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize(
    "change, pools",
    [({}, 4), ({"no_pool": (1,)}, 3), ({"skip": (4,)}, 3), ({"no_relu": (2, 3, 4)}, 4)],
)
def test_stages_build_on_28_and_64_pixel_inputs(size, change, pools):
    model = models.build(ModelConfig("cnn_stages", **change), InputSpec(size=size))
    x = torch.rand(3, 1, size, size)
    assert model(x).shape == (3, 10)
    # Odd sides round up (28 -> 14 -> 7 -> 4 -> 2): no row or column is dropped.
    side = {(28, 4): 2, (28, 3): 4, (64, 4): 4, (64, 3): 8}[size, pools]
    width = 64 if change.get("skip") else 128
    assert model.features(x).shape == (3, width * side * side)


def test_each_ablation_removes_exactly_its_layers():
    def layers(**change):
        body = models.build(ModelConfig("cnn_stages", **change), InputSpec()).body
        return [type(m).__name__ for m in body]

    def pools(names):
        return sum(n.startswith("MaxPool2") for n in names)

    full = layers()
    assert full.count("Conv2d") == 4 and full.count("ReLU") == 4
    assert pools(full) == 4
    assert layers(no_relu=(3,)).count("ReLU") == 3
    assert pools(layers(no_pool=(2,))) == 3
    assert layers(skip=(4,)).count("Conv2d") == 3
    assert pools(layers(skip=(4,))) == 3
    combo = layers(no_relu=(2, 3, 4), no_pool=(4,))
    assert combo.count("ReLU") == 1 and pools(combo) == 3


@pytest.mark.parametrize(
    "change, message",
    [({"no_relu": (5,)}, "numbered 1 to 4"), ({"skip": (1, 2, 3, 4)}, "every stage"),
     ({"kernel": 4}, "odd"), ({"stages": (8, 0)}, "between 1 and 1024"),
     ({"stages": (8,) * 9}, "1 to 8 conv stages")],
)  # fmt: skip
def test_impossible_stage_settings_are_refused(change, message):
    from core.schema import validate

    with pytest.raises(UserError, match=message):
        validate(RunConfig(model=ModelConfig("cnn_stages", **change)))


def test_stage_settings_survive_the_json_round_trip():
    cfg = replace(STAGES, model=replace(STAGES.model, no_relu=(2, 3), skip=(4,)))
    assert from_dict(json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_validation_reports_top5_accuracy_every_epoch():
    from core import data as datasets
    from core.train import EpochEnd, train

    events = [e for e in train(STAGES, datasets.load(DIGITS)) if isinstance(e, EpochEnd)]
    assert 0 <= events[-1].val_accuracy <= events[-1].val_top5_accuracy <= 1


# -- building variants ---------------------------------------------------------------------
def test_values_are_read_as_their_fields_type():
    assert sweep.parse_value("hidden", "3x75") == (75, 75, 75)
    assert sweep.parse_value("hidden", "50,50") == (50, 50)
    assert sweep.parse_value("lr", "1e-3") == 0.001
    assert sweep.parse_value("epochs", "5") == 5
    assert sweep.parse_value("pooling", "no") is False
    assert sweep.parse_value("no_relu", "none") == ()
    assert sweep.parse_value("dropout", "none") is None
    assert sweep.parse_value("model", "mlp") == "mlp"
    assert sweep.parse_value("train.seed", "3") == 3


@pytest.mark.parametrize(
    "spec, message",
    [("lr=fast", "cannot read 'fast' as a number"), ("colour=red|blue", "no config field"),
     ("lr", "param=v1|v2"), ("epochs=1.5", "as a whole number"), ("pooling=maybe", "as yes or no")],
)  # fmt: skip
def test_bad_grids_are_refused_in_one_line(spec, message):
    with pytest.raises(UserError, match=message):
        sweep.grid(TINY_MLP, sweep.parse_grid([spec]))


def test_a_grid_crosses_every_value_and_validates_each():
    spec = sweep.parse_grid(["hidden=100|50,50|3x75", "lr=0.01|0.001"])
    variants = sweep.grid(TINY_MLP, spec)
    assert len(variants) == 6
    assert {v.cfg.model.hidden for v in variants} == {(100,), (50, 50), (75, 75, 75)}
    assert {v.cfg.train.lr for v in variants} == {0.01, 0.001}
    assert variants[0].name == "hidden=100 lr=0.01"
    with pytest.raises(UserError, match="learning rate"):
        sweep.grid(TINY_MLP, sweep.parse_grid(["lr=0.1|-1"]))


def test_a_random_sweep_draws_distinct_combinations_reproducibly():
    spec = sweep.parse_grid(["hidden=8|16|32", "lr=0.1|0.01|0.001", "seed=0|1"])
    a = sweep.grid(TINY_MLP, spec, sample=5, seed=7)
    b = sweep.grid(TINY_MLP, spec, sample=5, seed=7)
    assert [v.name for v in a] == [v.name for v in b]
    assert len({v.name for v in a}) == 5


def test_seed_003s_ablation_set():
    variants = sweep.ablations(STAGES)
    names = [v.name for v in variants]
    assert names == ["full network", "no ReLU 1", "no ReLU 2", "no ReLU 3", "no ReLU 4",
                     "no pool 1", "no pool 2", "no pool 3", "no pool 4",
                     "no ReLU 2-4, no pool 4", "no stage 4"]  # fmt: skip
    by_name = {v.name: v.cfg.model for v in variants}
    assert by_name["no ReLU 2-4, no pool 4"].no_relu == (2, 3, 4)
    assert by_name["no ReLU 2-4, no pool 4"].no_pool == (4,)
    assert by_name["no stage 4"].skip == (4,)
    assert all(v.cfg.model.stages == (4, 8, 8, 8) for v in variants)  # the base is kept
    assert [v.name for v in sweep.ablations(STAGES, ["no pool 2"])] == ["no pool 2"]
    with pytest.raises(UserError, match="unknown ablation"):
        sweep.ablations(STAGES, ["no brain"])
    with pytest.raises(UserError, match="cnn_stages"):
        sweep.ablations(TINY_MLP)


# -- running them --------------------------------------------------------------------------
def test_a_run_reports_top1_and_top5_error_and_a_divergence_its_epoch(tmp_path):
    ok = sweep.run_one("base", to_dict(STAGES), str(tmp_path))
    assert ok["status"] == "ok" and not ok["cache_hit"]
    assert ok["test"]["top1_error"] == pytest.approx(1 - ok["test"]["accuracy"])
    assert ok["test"]["top5_error"] == pytest.approx(1 - ok["test"]["top5_accuracy"])
    assert ok["test"]["top5_error"] <= ok["test"]["top1_error"]
    assert len(ok["history"]["val_top5_accuracy"]) == 1
    again = sweep.run_one("base", to_dict(STAGES), str(tmp_path))
    assert again["cache_hit"] and again["run_id"] == ok["run_id"]

    wild = replace(STAGES, train=replace(FAST, lr=1e4, optimizer="sgd"))
    bad = sweep.run_one("wild", to_dict(wild), str(tmp_path))
    assert bad["status"] == "diverged" and bad["epoch"] == 1 and "loss" in bad["reason"]


def test_two_workers_each_get_a_share_of_the_cores(monkeypatch):
    monkeypatch.setattr("core.device.cores", lambda: 2)
    assert sweep.plan(1) == (1, 2)
    assert sweep.plan(5) == (2, 1)
    assert sweep.plan(5, workers=1) == (1, 2)
    monkeypatch.setenv(sweep.THREADS_ENV, "1")
    from core.device import threads

    assert threads() == 1


def test_a_local_pool_runs_every_variant_and_keeps_their_order(tmp_path):
    variants = sweep.grid(TINY_MLP, sweep.parse_grid(["hidden=8|16|24"]))
    seen = []
    rows = sweep.run_local(variants, str(tmp_path), workers=2, done=seen.append)
    assert [r["name"] for r in rows] == ["hidden=8", "hidden=16", "hidden=24"]
    assert all(r["status"] == "ok" for r in rows) and len(seen) == 3
    assert len({r["run_id"] for r in rows}) == 3
    again = sweep.run_local(variants, str(tmp_path), workers=2)  # reuses the stored runs
    assert all(r["cache_hit"] for r in again)


# -- the command line ----------------------------------------------------------------------
def test_ablate_writes_every_variant_with_its_errors(run_cli, tmp_path):
    out = tmp_path / "ablate.json"
    proc = run_cli("ablate", "--model", "cnn_stages", "--stages", "4,8,8,8", *DIGIT_FLAGS,
                   "--only", "full network", "--only", "no ReLU 1", "--only", "no stage 4",
                   "--json", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(out.read_text())["runs"]
    assert [r["name"] for r in runs] == ["full network", "no ReLU 1", "no stage 4"]
    for r in runs:
        assert r["status"] == "ok"
        assert {"accuracy", "top1_error", "top5_error"} <= r["test"].keys()
        assert r["history"]["val_loss"]
    assert "top-1 err" in proc.stdout and "no stage 4" in proc.stdout


def test_sweep_writes_a_row_per_combination(run_cli, tmp_path):
    out = tmp_path / "sweep.json"
    proc = run_cli("sweep", "--model", "mlp", *DIGIT_FLAGS, "--grid", "hidden=16|2x8",
                   "--grid", "lr=0.003|0.01", "--random", "3", "--json", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(out.read_text())["runs"]
    assert len(runs) == 3 and all(r["status"] == "ok" for r in runs)
    assert all(set(r["params"]) == {"hidden", "lr"} for r in runs)


@pytest.mark.parametrize(
    "args, message",
    [(["sweep", "--model", "mlp", "--grid", "lr=oops"], "cannot read 'oops'"),
     (["sweep", "--model", "mlp"], "at least one --grid"),
     (["ablate", "--model", "mlp"], "cnn_stages"),
     (["ablate", "--model", "cnn_stages", "--no-relu", "9"], "numbered 1 to 4"),
     (["sweep", "--model", "mlp", "--grid", "lr=0.1", "--workers", "0"], "workers")],
)  # fmt: skip
def test_bad_experiments_get_one_error_line(run_cli, args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and message in proc.stderr
    assert "Traceback" not in proc.stderr


# -- a Ray cluster on this machine (the ray_head fixture: conftest.py) ----------------------
def test_the_same_sweep_runs_on_a_ray_cluster(run_cli, ray_head, tmp_path):
    store = tmp_path / "store"
    out = tmp_path / "ray.json"
    started = time.perf_counter()
    proc = run_cli("sweep", "--model", "mlp", *DIGIT_FLAGS, "--grid", "hidden=16|32",
                   "--ray-address", ray_head, "--store", str(store), "--json", str(out),
                   timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(out.read_text())["runs"]
    assert [r["name"] for r in runs] == ["hidden=16", "hidden=32"]
    assert all(r["status"] == "ok" and not r["cache_hit"] for r in runs)
    # The trials trained through the store: the same runs are now cache hits locally.
    local = sweep.run_local(sweep.grid(TINY_MLP, sweep.parse_grid(["hidden=16|32"])),
                            str(store), workers=1)  # fmt: skip
    assert [r["run_id"] for r in local] == [r["run_id"] for r in runs]
    assert all(r["cache_hit"] for r in local), time.perf_counter() - started


def test_an_unreachable_cluster_is_one_error_line(run_cli):
    proc = run_cli("sweep", "--model", "mlp", *DIGIT_FLAGS, "--grid", "hidden=16",
                   "--ray-address", f"127.0.0.1:{free_port()}", timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error:")


def test_a_grid_is_counted_and_capped_before_it_is_expanded(run_cli, monkeypatch):
    values = "|".join(str(v) for v in range(1, 1001))  # 1000 x 1000 x 1000 combinations
    spec = sweep.parse_grid([f"seed={values}", f"split_seed={values}", f"batch_size={values}"])
    with pytest.raises(UserError, match="1,000,000,000 combinations; the limit is 64 runs"):
        sweep.grid(TINY_MLP, spec)
    # Sampling picks combinations by their index: four of a billion, none of the others built.
    picked = sweep.grid(TINY_MLP, spec, sample=4, seed=0)
    assert len({v.name for v in picked}) == 4
    monkeypatch.setenv("CNN_CLASSROOM_MAX_VARIANTS", "3")
    with pytest.raises(UserError, match="the limit is 3 runs"):
        sweep.grid(TINY_MLP, spec, sample=4)
    proc = run_cli("sweep", "--model", "mlp", *DIGIT_FLAGS, "--grid", f"batch_size={values}",
                   env={"CNN_CLASSROOM_MAX_VARIANTS": "64"})  # fmt: skip
    assert proc.returncode == 2 and "1,000 combinations; the limit is 64" in proc.stderr
    assert "Traceback" not in proc.stderr
