"""``python -m core store list | delete | prune``: the teacher's view of the store on the
command line (issue 20, item 2): one line per run or action, --json for scripts, bad input
one line and exit 2 before anything is deleted."""

from __future__ import annotations

import json
import shutil

import pytest

from core import cli
from core.store import Store

OLD, DAMAGED = "f" * 20, "e" * 20


@pytest.fixture
def store(tiny_run, tmp_path) -> Store:
    """The tiny run (current), the same weights stored under a key no current code gives
    (as a run trained before a version bump), and a damaged folder."""
    root = tmp_path / "store"
    shutil.copytree(tiny_run.root, root)
    store = Store(root)
    model, meta = store.load_model(tiny_run.run_id)
    kept = {k: v for k, v in meta.items()
            if k not in ("run_id", "checksum", "weights_sha256", "format", "created")}  # fmt: skip
    store.save(OLD, model, kept)
    (store.runs / DAMAGED).mkdir()
    (store.runs / DAMAGED / "meta.json").write_text("{}")
    return store


def run(capsys, *args) -> tuple[int, list[str], str]:
    code = cli.main(["store", *args])
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err.strip()


def test_list_says_what_is_current_and_the_total(store, tiny_run, capsys):
    code, lines, _ = run(capsys, "list", "--store", str(store.root))
    assert code == 0
    mine = next(line for line in lines if line.startswith(tiny_run.run_id))
    assert "mlp" in mine and "acc " in mine and " MB" in mine and mine.endswith(" current")
    assert next(line for line in lines if line.startswith(OLD)).endswith("not current")
    assert any(line.startswith(DAMAGED) and "damaged" in line for line in lines)
    assert lines[-1].startswith("2 runs, ") and lines[-1].endswith("1 not current, 1 damaged")
    code, lines, _ = run(capsys, "list", "--store", str(store.root), "--json")
    doc = json.loads("\n".join(lines))
    assert {r["run_id"]: r["current"] for r in doc["runs"]} == {tiny_run.run_id: True, OLD: False}
    assert doc["damaged"] == [DAMAGED]
    assert doc["total_bytes"] >= sum(r["bytes"] for r in doc["runs"]) > 0


def test_prune_deletes_only_what_no_current_code_rebuilds(store, tiny_run, capsys):
    code, lines, _ = run(capsys, "prune", "--store", str(store.root))
    assert code == 0
    assert {line.split()[1] for line in lines[:-1]} == {OLD, DAMAGED}
    assert lines[-1].startswith("2 runs deleted, ")
    assert [m["run_id"] for m in store.list()] == [tiny_run.run_id] and store.damaged() == []
    code, lines, _ = run(capsys, "prune", "--store", str(store.root), "--json")
    assert json.loads(lines[0]) == {"deleted": [], "freed_bytes": 0}


def test_delete_removes_a_run_and_its_derived_files(store, tiny_run, capsys):
    probs = store.run_file(tiny_run.run_id, "test-probs.npy")
    assert probs.exists()
    code, lines, _ = run(capsys, "delete", tiny_run.run_id, "--store", str(store.root), "--json")
    assert code == 0 and json.loads(lines[0])["deleted"][0]["run_id"] == tiny_run.run_id
    assert store.meta(tiny_run.run_id) is None and not probs.exists()


@pytest.mark.parametrize(
    ("bad", "message"),
    [("nope", "'nope' is not a run id"), ("0123456789abcdef0123", "no run 0123456789abcdef0123")],
)
def test_bad_run_ids_are_one_line_and_nothing_is_deleted(store, tiny_run, capsys, bad, message):
    code, lines, err = run(capsys, "delete", tiny_run.run_id, bad, "--store", str(store.root))
    assert code == 2 and lines == [] and err.startswith(f"error: {message}")
    assert len(err.splitlines()) == 1
    assert store.meta(tiny_run.run_id) is not None  # the good id before it was kept too
