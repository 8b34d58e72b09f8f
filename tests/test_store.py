"""The model store: round trips, keys, tampering, atomic saves, locking, train_or_load."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, run_python
from safetensors import SafetensorError

from core import models
from core.config import DataConfig, ModelConfig, RunConfig, TrainConfig, to_dict
from core.models.base import InputSpec
from core.runs import Stored, train_or_load
from core.store import META, WEIGHTS, Store, code_version, meta_checksum, run_key
from core.train import Diverged, Finished

RUN_ID = "0123456789abcdef0123"


def small_model_and_meta(name: str = "mlp"):
    cfg = RunConfig(model=ModelConfig(name))
    spec = InputSpec()
    torch.manual_seed(0)
    model = models.build(cfg.model, spec).eval()
    meta = {
        "config": to_dict(cfg),
        "model": name,
        "input": {k: getattr(spec, k) for k in ("channels", "size", "num_classes", "mean", "std")},
        "test": {"accuracy": 0.5},
        "history": {"epoch": [1]},
    }
    return model, meta


@pytest.fixture
def saved(tmp_path):
    store = Store(tmp_path / "store")
    model, meta = small_model_and_meta()
    store.save(RUN_ID, model, meta)
    return store, model


class Payload:
    """Unpickling this creates ``marker``: proof that something was unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps({"body.0.weight": Payload(marker)})


# -- round trip and keys --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "cnn_bn"])
def test_save_meta_and_load_round_trip(tmp_path, name):
    store = Store(tmp_path)
    model, meta = small_model_and_meta(name)
    written = store.save(RUN_ID, model, meta)
    assert store.meta(RUN_ID) == json.loads(json.dumps(written))
    assert written["test"] == {"accuracy": 0.5} and written["run_id"] == RUN_ID
    assert (tmp_path / "runs" / RUN_ID / WEIGHTS).is_file()
    loaded, loaded_meta = store.load_model(RUN_ID)
    assert loaded_meta == store.meta(RUN_ID) and not loaded.training
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert [m["run_id"] for m in store.list()] == [RUN_ID]


def test_missing_run_is_none_and_key_error(tmp_path):
    store = Store(tmp_path)
    assert store.meta(RUN_ID) is None and store.list() == []
    with pytest.raises(KeyError):
        store.load_model(RUN_ID)
    with pytest.raises(ValueError):
        store.path("../../etc")


def test_list_is_newest_first_and_skips_strays(tmp_path):
    store = Store(tmp_path)
    model, meta = small_model_and_meta()
    ids = ["a" * 20, "b" * 20, "c" * 20]
    for run_id in ids:
        store.save(run_id, model, meta)
        time.sleep(0.01)  # distinct creation times
    (store.runs / "not-a-run").mkdir()
    (store.runs / ".tmp-leftover").mkdir()
    assert [m["run_id"] for m in store.list()] == ids[::-1]


def test_run_key_follows_config_and_data_but_not_data_dir():
    key = run_key(TINY, "data-1")
    assert len(key) == 20 and int(key, 16) >= 0
    assert key == run_key(TINY, "data-1")
    others = [
        run_key(TINY, "data-2"),
        run_key(replace(TINY, train=replace(TINY.train, lr=1e-3)), "data-1"),
        run_key(replace(TINY, train=replace(TINY.train, seed=1)), "data-1"),
        run_key(replace(TINY, model=ModelConfig("cnn_bn")), "data-1"),
        run_key(replace(TINY, data=replace(TINY.data, val_size=99)), "data-1"),
    ]
    assert key not in others and len(set(others)) == len(others)
    moved = replace(TINY, data=replace(TINY.data, data_dir="/somewhere/else"))
    assert run_key(moved, "data-1") == key
    assert code_version("mlp") == "mlp/1 trainer/1 data/1"


def test_run_key_follows_the_declared_versions_not_the_source_files(monkeypatch):
    """A docstring or speed-only edit keeps every stored run; a version bump re-keys the
    runs of that family (or all, for the trainer and the data pipeline)."""
    import core.data
    import core.tasks
    from core import models
    from core.models import catalog

    fast = replace(TINY, model=ModelConfig("fast"))
    key, other = run_key(TINY, "data-1"), run_key(fast, "data-1")
    entry = catalog.family(TINY.model.name)
    monkeypatch.setattr(models.factory(entry.name), "__doc__", "an edited docstring")
    assert run_key(TINY, "data-1") == key
    monkeypatch.setitem(catalog.FAMILIES, entry.name, replace(entry, version=entry.version + 1))
    bumped = run_key(TINY, "data-1")
    assert bumped != key
    assert run_key(fast, "data-1") == other  # only that family's runs
    monkeypatch.setattr(core.tasks, "TRAINER_VERSION", core.tasks.TRAINER_VERSION + 1)
    trainer = run_key(TINY, "data-1")
    assert trainer not in (key, bumped)
    assert run_key(fast, "data-1") != other
    monkeypatch.setattr(core.data, "DATA_VERSION", core.data.DATA_VERSION + 1)
    assert run_key(TINY, "data-1") not in (key, bumped, trainer)


# -- tampering ------------------------------------------------------------------------------


def edit_meta(folder: Path, change) -> None:
    meta = json.loads((folder / META).read_text())
    change(meta)
    (folder / META).write_text(json.dumps(meta))


DAMAGE = {
    "garbage weights": lambda f, m: (f / WEIGHTS).write_bytes(b"garbage" * 100),
    "truncated weights": lambda f, m: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:-9]),
    "missing weights": lambda f, m: (f / WEIGHTS).unlink(),
    "pickled weights": lambda f, m: (f / WEIGHTS).write_bytes(pickle_bytes(m)),
    "edited accuracy": lambda f, m: edit_meta(f, lambda d: d["test"].update(accuracy=0.99)),
    "edited config": lambda f, m: edit_meta(f, lambda d: d["config"]["train"].update(lr=1.0)),
    "truncated meta": lambda f, m: (f / META).write_text((f / META).read_text()[:50]),
    "missing meta": lambda f, m: (f / META).unlink(),
    "meta not a dict": lambda f, m: (f / META).write_text("[1, 2]"),
    "meta not utf-8": lambda f, m: (f / META).write_bytes(b"\xff\xfe{}"),
    "foreign run id": lambda f, m: edit_meta(f, lambda d: d.update(run_id="f" * 20)),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_entry_is_missing_and_never_unpickled(saved, tmp_path, damage):
    store, _ = saved
    marker = tmp_path / "unpickled"
    DAMAGE[damage](store.path(RUN_ID), marker)
    assert store.meta(RUN_ID) is None
    assert store.list() == []
    with pytest.raises(KeyError):
        store.load_model(RUN_ID)
    assert not marker.exists()


def test_pickle_payload_is_live(tmp_path):
    """The payload above really runs code when unpickled (so its absence means something)."""
    marker = tmp_path / "live"
    pickle.loads(pickle_bytes(marker))
    assert marker.exists()


def test_pickle_with_forged_checksums_is_still_not_unpickled(saved, tmp_path):
    store, _ = saved
    marker = tmp_path / "unpickled"
    folder = store.path(RUN_ID)
    blob = pickle_bytes(marker)
    (folder / WEIGHTS).write_bytes(blob)

    def forge(meta):
        import hashlib

        meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
        meta["checksum"] = meta_checksum(meta)

    edit_meta(folder, forge)
    assert store.meta(RUN_ID) is not None  # the checksums match: only the format protects us
    with pytest.raises(SafetensorError):
        store.load_model(RUN_ID)
    assert not marker.exists()


def test_saving_over_a_damaged_entry_replaces_it(saved):
    store, model = saved
    (store.path(RUN_ID) / WEIGHTS).write_bytes(b"junk")
    assert store.meta(RUN_ID) is None
    _, meta = small_model_and_meta()
    store.save(RUN_ID, model, meta)
    assert store.meta(RUN_ID) is not None
    assert [p.name for p in store.runs.iterdir()] == [RUN_ID]  # the damaged copy is gone
    store.delete(RUN_ID)
    assert store.meta(RUN_ID) is None and not store.path(RUN_ID).exists()


# -- the verified listing, cached by the files' times -----------------------------------------


@pytest.fixture
def hashes(monkeypatch) -> list[str]:
    """Every weights file the store hashes, in order; files count as settled at once (their
    timestamps are trusted however recent)."""
    from core import store as store_module

    seen, real = [], store_module.file_sha256

    def counting(path):
        seen.append(Path(path).parent.name)
        return real(path)

    monkeypatch.setattr(store_module, "file_sha256", counting)
    monkeypatch.setattr(store_module, "RACY_NS", -(10**12))
    return seen


def test_listing_hashes_each_weights_file_once(saved, hashes):
    store, model = saved
    _, meta = small_model_and_meta()
    store.save("a" * 20, model, meta)
    for _ in range(5):  # every /classify call lists the store
        assert {m["run_id"] for m in store.list()} == {RUN_ID, "a" * 20}
    assert sorted(hashes) == sorted([RUN_ID, "a" * 20])
    assert Store(store.root).meta(RUN_ID) is not None  # another Store object: same files
    assert len(hashes) == 2


def test_a_changed_or_replaced_file_is_verified_again(saved, hashes, tmp_path):
    store, _ = saved
    folder = store.path(RUN_ID)
    good = (folder / WEIGHTS).read_bytes()
    assert store.meta(RUN_ID) is not None
    bad = tmp_path / "bad"
    bad.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # same size, one bit flipped
    os.replace(bad, folder / WEIGHTS)  # another inode
    assert store.meta(RUN_ID) is None and store.list() == []
    (folder / WEIGHTS).write_bytes(good)  # the same inode, rewritten
    assert store.meta(RUN_ID) is not None
    edit_meta(folder, lambda d: d["test"].update(accuracy=0.99))
    assert store.meta(RUN_ID) is None
    assert len(hashes) == 4  # once per version of the files


def test_a_file_rewritten_within_a_timestamp_tick_is_not_trusted(saved, monkeypatch):
    """On a coarse clock a same-size rewrite in the same tick as the check leaves inode, size
    and times as they were; a file that recent is checked again each time."""
    from core import store as store_module

    real, first_times = store_module._signature, {}

    def coarse(path):  # the times of each file's first stat, whatever happens later
        sig = real(path)
        return sig[:3] + first_times.setdefault(str(path), sig[3:])

    monkeypatch.setattr(store_module, "_signature", coarse)
    store, _ = saved
    weights = store.path(RUN_ID) / WEIGHTS
    assert store.meta(RUN_ID) is not None
    with open(weights, "r+b") as f:  # in place, same size
        f.write(bytes([weights.read_bytes()[0] ^ 1]))
    assert store.meta(RUN_ID) is None


def test_the_remembered_metadata_cannot_be_changed_by_a_caller(saved, hashes):
    store, _ = saved
    first = store.meta(RUN_ID)
    first["test"]["accuracy"] = 1.0
    assert store.meta(RUN_ID)["test"]["accuracy"] == 0.5


# -- atomic saves ---------------------------------------------------------------------------

CRASH_DURING_SAVE = """
import os, sys
import torch
from core import models
from core.config import ModelConfig, RunConfig, to_dict
from core.models.base import InputSpec
from core.store import Store

root, run_id = sys.argv[1], sys.argv[2]
spec = InputSpec()
cfg = RunConfig(model=ModelConfig("mlp"))
meta = {"config": to_dict(cfg), "input": {"channels": 1, "size": 28, "num_classes": 10,
        "mean": [0.5], "std": [0.5]}}
real_rename = os.rename

def crash(src, dst, *args, **kwargs):
    if os.path.basename(str(dst)) == run_id:  # the final rename that publishes the entry
        os._exit(9)
    return real_rename(src, dst, *args, **kwargs)

os.rename = crash
Store(root).save(run_id, models.build(cfg.model, spec), meta)
print("saved anyway")
"""


def test_crash_before_the_final_rename_leaves_no_entry(tmp_path):
    root = tmp_path / "store"
    result = run_python(CRASH_DURING_SAVE, str(root), RUN_ID)
    assert result.returncode == 9, result.stderr
    assert "saved anyway" not in result.stdout
    store = Store(root)
    leftovers = list(store.runs.glob(".tmp-*"))
    assert len(leftovers) == 1  # the crash really happened mid-save
    assert {p.name for p in leftovers[0].iterdir()} == {WEIGHTS, META}
    assert store.meta(RUN_ID) is None and store.list() == []

    model, meta = small_model_and_meta()
    store.save(RUN_ID, model, meta)
    assert store.meta(RUN_ID) is not None
    store.clean(older_than=3600)  # too young to be called abandoned
    assert leftovers[0].exists()
    time.sleep(0.01)
    store.clean(older_than=0)
    assert not leftovers[0].exists()
    assert store.meta(RUN_ID) is not None  # clean never touches finished entries


def test_failed_save_cleans_its_temporary_folder(tmp_path, monkeypatch):
    store = Store(tmp_path)
    model, meta = small_model_and_meta()

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "rename", refuse)
    with pytest.raises(OSError, match="disk full"):
        store.save(RUN_ID, model, meta)
    monkeypatch.undo()
    assert list(store.runs.iterdir()) == []


# -- train_or_load --------------------------------------------------------------------------

TRAIN_WHEN_TOLD = """
import json, sys, time
from pathlib import Path
root, ready, go = sys.argv[1:4]
import core.train  # pay for torch before the race starts
from core import data
from core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from core.runs import Stored, train_or_load
from core.store import Store

cfg = RunConfig(
    data=DataConfig(dataset="digits", val_size=100, train_limit=512),
    model=ModelConfig("mlp"),
    train=TrainConfig(epochs=2, batch_size=64, lr=3e-3, schedule="constant", bf16="off"),
)
data.load(cfg.data)
Path(ready).touch()
deadline = time.monotonic() + 120
while not Path(go).exists() and time.monotonic() < deadline:
    time.sleep(0.005)
events = list(train_or_load(cfg, Store(root)))
last = events[-1]
assert isinstance(last, Stored), events
print(json.dumps({"cache_hit": last.cache_hit, "run_id": last.run_id,
                  "events": [type(e).__name__ for e in events]}))
"""


@pytest.mark.slow
def test_concurrent_trainers_train_once(tmp_path):
    root = tmp_path / "store"
    procs, ready = [], []
    for i in range(2):
        ready.append(tmp_path / f"ready-{i}")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    TRAIN_WHEN_TOLD,
                    str(root),
                    str(ready[i]),
                    str(tmp_path / "go"),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        deadline = time.monotonic() + 120
        while not all(r.exists() for r in ready):
            assert time.monotonic() < deadline, "the trainers never got ready"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.01)
        (tmp_path / "go").touch()
        outputs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    results = [json.loads(out.splitlines()[-1]) for out, _ in outputs]
    results.sort(key=lambda r: r["cache_hit"])
    assert [r["cache_hit"] for r in results] == [False, True]
    trainer, reuser = results
    assert trainer["run_id"] == reuser["run_id"]
    assert "BatchEnd" in trainer["events"] and "Finished" in trainer["events"]
    assert "BatchEnd" not in reuser["events"]  # it waited (or came late), never trained
    assert set(reuser["events"]) <= {"Waiting", "Stored"}
    assert [m["run_id"] for m in Store(root).list()] == [trainer["run_id"]]


def test_train_or_load_trains_then_hits(tmp_path):
    store = Store(tmp_path)
    first = list(train_or_load(TINY, store))
    assert isinstance(first[-1], Stored) and not first[-1].cache_hit
    assert first[-1].model is not None
    assert any(isinstance(e, Finished) for e in first)
    meta = first[-1].meta
    assert meta["model"] == "mlp" and meta["dataset"]["sizes"]["train"] == 256
    assert len(meta["history"]["epoch"]) == 2
    assert 0 <= meta["test"]["accuracy"] <= 1
    second = list(train_or_load(TINY, store))
    assert (
        len(second) == 1 and second[0].cache_hit and second[0].meta == store.meta(first[-1].run_id)
    )
    model, _ = store.load_model(first[-1].run_id)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), first[-1].model(x))


def test_diverging_run_stores_nothing(tmp_path):
    store = Store(tmp_path)
    cfg = replace(TINY, train=replace(TINY.train, lr=1e4, optimizer="sgd"))
    events = list(train_or_load(cfg, store))
    assert isinstance(events[-1], Diverged)
    assert not any(isinstance(e, Stored) for e in events)
    assert store.list() == []
    assert not store.runs.exists() or list(store.runs.iterdir()) == []


def test_stopped_run_stores_nothing(tmp_path):
    store = Store(tmp_path)
    stop = threading.Event()
    events = []
    for event in train_or_load(TINY, store, stop):
        events.append(event)
        stop.set()
    assert isinstance(events[-1], Finished) and events[-1].stopped
    assert store.list() == []


def test_damaged_entry_is_retrained(tiny_run, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(tiny_run.root, root)
    store = Store(root)
    assert list(train_or_load(TINY, store))[-1].cache_hit
    (store.path(tiny_run.run_id) / WEIGHTS).write_bytes(b"\0" * 64)
    events = list(train_or_load(TINY, store))
    assert isinstance(events[-1], Stored) and not events[-1].cache_hit
    assert store.meta(tiny_run.run_id) is not None


def test_default_store_follows_the_environment(isolated_store):
    assert Store().root == isolated_store
    events = list(
        train_or_load(
            RunConfig(
                DataConfig(dataset="digits", val_size=100, train_limit=64),
                ModelConfig("mlp"),
                TrainConfig(epochs=1, batch_size=64, schedule="constant", bf16="off"),
            )
        )
    )
    assert (isolated_store / "runs" / events[-1].run_id / META).is_file()


def test_delete_removes_the_runs_cached_maps(tmp_path):
    import numpy as np

    from core import embed

    store = Store(tmp_path)
    keep, gone = "a" * 20, "b" * 20
    for run_id in (keep, gone):
        embed.save_cached(embed.CacheKey(run_id, "pca", 3), np.zeros((3, 2), np.float32), tmp_path)
    store.delete(gone)
    left = sorted(p.name for p in (tmp_path / "embeddings").iterdir())
    assert left and all(name.startswith(keep) for name in left)


def test_test_set_probabilities_are_kept_beside_a_new_run(tmp_path):
    """Computed once when the run is stored (for its metrics), so the Evaluate and
    Embeddings pages read them instead of predicting 10,000 images on a first view."""
    from core import data as datasets
    from core import runs
    from core.store import TEST_PROBS
    from core.train import predict_proba

    store = Store(tmp_path)
    stored = list(train_or_load(TINY, store))[-1]
    n, classes = stored.meta["dataset"]["sizes"]["test"], len(stored.meta["classes"])
    probs = store.test_probs(stored.run_id)
    model, meta = store.load_model(stored.run_id)
    x_test = datasets.load(DataConfig(**meta["config"]["data"])).x_test
    assert probs is not None and probs.shape == (n, classes)
    assert abs(probs - predict_proba(model, x_test)).max() < 1e-5
    path = store.run_file(stored.run_id, TEST_PROBS)
    assert store.read_array(path, (n, classes + 1)) is None  # wrong shape
    path.write_bytes(b"not an array")
    assert store.test_probs(stored.run_id) is None  # damaged: recomputed, and kept again
    assert abs(runs.test_probs(store, stored.run_id) - probs).max() < 1e-5
    assert store.test_probs(stored.run_id) is not None
    store.delete(stored.run_id)
    assert not path.exists()
