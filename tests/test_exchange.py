"""A run leaves the app and comes back (issue 20, item 5, its zip and safetensors half):
``python -m core export RUN --format zip|safetensors --out PATH`` and ``python -m core import
FILE.zip``, verified by checksums; anything that is not such a zip is one line, exit 2."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch
from safetensors.torch import load_file

from core import cli
from core.store import META, TEST_PROBS, WEIGHTS, Store


def run(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def test_a_run_travels_in_a_zip_and_comes_back_the_same(tiny_run, tmp_path, capsys):
    out = tmp_path / "run.zip"
    code, said, _ = run(capsys, "export", tiny_run.run_id, "--out", str(out),
                        "--store", str(tiny_run.root))  # fmt: skip
    assert code == 0 and said.startswith(f"exported {tiny_run.run_id} to ")
    assert set(zipfile.ZipFile(out).namelist()) == {WEIGHTS, META, TEST_PROBS}
    other = Store(tmp_path / "other")
    code, said, _ = run(capsys, "import", str(out), "--store", str(other.root))
    assert code == 0 and said.endswith("checksums verified")
    theirs, meta = other.load_model(tiny_run.run_id)
    mine, _ = Store(tiny_run.root).load_model(tiny_run.run_id)
    for (name, a), (_, b) in zip(mine.state_dict().items(), theirs.state_dict().items(),
                                 strict=True):  # fmt: skip
        assert torch.equal(a, b), name
    assert meta["test"] == tiny_run.meta["test"]
    assert (
        other.test_probs(tiny_run.run_id) == Store(tiny_run.root).test_probs(tiny_run.run_id)
    ).all()


def test_safetensors_is_the_weights_alone(tiny_run, tmp_path, capsys):
    out = tmp_path / "weights.safetensors"
    code, _, _ = run(capsys, "export", tiny_run.run_id, "--format", "safetensors", "--out",
                     str(out), "--store", str(tiny_run.root))  # fmt: skip
    mine, _ = Store(tiny_run.root).load_model(tiny_run.run_id)
    assert code == 0 and load_file(out).keys() == mine.state_dict().keys()


def rezip(source, target, change) -> None:
    with zipfile.ZipFile(source) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    change(files)
    with zipfile.ZipFile(target, "w") as zf:
        for name, blob in files.items():
            zf.writestr(name, blob)


def _tamper(files):
    meta = json.loads(files[META])
    meta["test"]["accuracy"] = 0.99  # a better score, claimed
    files[META] = json.dumps(meta).encode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_tamper, "do not match their checksums"),
        (lambda files: files.update({"../evil.py": b"import os"}), "nothing else"),
        (lambda files: files.pop(WEIGHTS), "nothing else"),
    ],
    ids=["tampered", "extra file", "no weights"],
)
def test_a_zip_that_is_not_a_whole_unaltered_run_is_refused(tiny_run, tmp_path, capsys, change,
                                                            message):  # fmt: skip
    good, bad = tmp_path / "good.zip", tmp_path / "bad.zip"
    Store(tiny_run.root).export_zip(tiny_run.run_id, good)
    rezip(good, bad, change)
    other = tmp_path / "other"
    code, said, err = run(capsys, "import", str(bad), "--store", str(other))
    assert code == 2 and not said and message in err and len(err.splitlines()) == 1
    assert Store(other).list() == []


def test_not_a_zip_and_no_file_are_one_line(tmp_path, capsys):
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    for path, message in ((tmp_path / "x.zip", "not a readable zip"), (tmp_path / "no.zip",
                                                                        "no file")):  # fmt: skip
        code, _, err = run(capsys, "import", str(path), "--store", str(tmp_path / "s"))
        assert code == 2 and message in err and len(err.splitlines()) == 1


def test_an_uploaded_zip_is_read_from_memory_under_its_own_name(tiny_run, tmp_path):
    """The Library page's upload box hands the store a file object, not a path."""
    import io

    good = tmp_path / "good.zip"
    Store(tiny_run.root).export_zip(tiny_run.run_id, good)
    other = Store(tmp_path / "other")
    meta = other.import_zip(io.BytesIO(good.read_bytes()), name="from-a-student.zip")
    assert meta["run_id"] == tiny_run.run_id and other.meta(tiny_run.run_id) is not None
    with pytest.raises(Exception, match=r"^from-a-student\.zip is not a readable zip"):
        other.import_zip(io.BytesIO(b"nonsense"), name="from-a-student.zip")


def test_a_nodes_derived_files_come_back_and_nothing_else(tiny_run, tmp_path):
    """What a Ray node made beside a run (test probabilities, ...) travels with it; a name
    outside the carried set is not written anywhere."""
    node = Store(tiny_run.root)
    carried = node.derived_files(tiny_run.run_id)
    assert TEST_PROBS in carried
    here = Store(tmp_path / "server")
    here.import_files(tiny_run.run_id, node.export_files(tiny_run.run_id))
    here.import_derived(tiny_run.run_id, carried | {"../../evil": b"x", "tsne.npy": b"y"})
    assert (here.test_probs(tiny_run.run_id) == node.test_probs(tiny_run.run_id)).all()
    written = sorted(p.name for p in here.derived.iterdir() if not p.name.startswith("."))
    assert written == sorted(f"{tiny_run.run_id}-{what}" for what in carried)
