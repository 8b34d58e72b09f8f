"""The on-disk model store: one folder per run, keyed by what decides its result.

    <root>/runs/<run_id>/weights.safetensors   the state dict (never a pickle)
    <root>/runs/<run_id>/meta.json             config, history, metrics, class names, checksums
    <root>/locks/<run_id>.lock                 held while the run trains
    <root>/names.json                          the names people gave runs (run id -> text)
    <root>/embeddings/<run_id>-<what>.npy      data derived from a run (test probabilities,
                                               maps): rebuilt when missing, removed with it
    <root>/embeddings/<name>                   derived data of no one run (pixel maps, atlases)

The key hashes the full config, the dataset's identity and the declared versions of what
computes the numbers (the model family's version in core.models.catalog,
``tasks.TRAINER_VERSION``, ``data.DATA_VERSION``): a changed knob, dataset, model or trainer
never returns a stale model, and an edit that keeps the numbers (a docstring, a speed-up)
keeps every stored run. tests/test_fingerprints.py catches a numerics change made without a
version bump.

Writes are atomic (a temporary folder, then one rename): a process killed while saving
leaves the old entry or none. An entry whose files do not match their checksums is treated
as missing, never loaded. A verified entry is remembered by its two files' inode, size and
modification and change times, so listing the store (every classify call does) hashes only
what changed since; a file rewritten within RACY_NS of its check is checked again, as git
does, since a timestamp tick may hide it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

from filelock import FileLock

from core.config import RunConfig, to_dict

STORE_ENV = "CNN_CLASSROOM_STORE"
FORMAT = 1
WEIGHTS, META = "weights.safetensors", "meta.json"
RACY_NS = 2_000_000_000  # a file changed this recently is not trusted by its timestamps yet
NAMES = "names.json"
DERIVED = "embeddings"  # the folder of derived data (named when maps were all it held)
MAX_NAME = 40  # characters of a run's name
MAX_NAMES = 10_000  # names kept in one store
TEST_PROBS = "test-probs.npy"  # a run's test-set class probabilities (derived)
MAX_VERIFIED = 4096  # verified entries remembered (per process, all stores together)


def default_root() -> Path:
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnn-classroom" / "store"


def versions(model_name: str) -> dict[str, int]:
    """The declared versions that decide the numbers of a run of model ``model_name``."""
    from core.data import DATA_VERSION
    from core.models import catalog
    from core.tasks import TRAINER_VERSION

    return {"model": catalog.family(model_name).version, "trainer": TRAINER_VERSION,
            "data": DATA_VERSION}  # fmt: skip


def code_version(model_name: str) -> str:
    """``versions`` in a few characters, for a run's metadata: "cnn_bn/1 trainer/1 data/1"."""
    v = versions(model_name)
    return f"{model_name}/{v['model']} trainer/{v['trainer']} data/{v['data']}"


def run_key(cfg: RunConfig, data_identity: str) -> str:
    """The run id: 20 hex digits of a hash over the config, the dataset's identity and the
    declared versions (``versions``); never over source files."""
    config = to_dict(cfg)
    config["data"].pop("data_dir")  # where the files lie does not matter, their content does
    text = json.dumps(
        {"config": config, "data": data_identity, "versions": versions(cfg.model.name)},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _signature(path: Path) -> tuple[int, ...]:
    """What changes when a file is rewritten or replaced (OSError when it is missing)."""
    about = os.stat(path)
    return (about.st_dev, about.st_ino, about.st_size, about.st_mtime_ns, about.st_ctime_ns)


def _settled(signatures: tuple[tuple[int, ...], ...]) -> bool:
    """Whether every file's last change is older than RACY_NS, so a later write is sure to
    show in its times (a write within the same timestamp tick might not)."""
    newest = max(max(sig[3], sig[4]) for sig in signatures)
    return time.time_ns() - newest > RACY_NS


_verified: OrderedDict[str, tuple[tuple, str]] = OrderedDict()  # run folder -> (files, meta text)
_verified_lock = threading.Lock()


def meta_checksum(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path: Path, data: bytes) -> Path:
    """Write ``path`` through a temporary file in its folder and one rename: readers see all
    of it or none, and a failed write leaves nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=path.parent)  # no glob sees it
    os.close(fd)
    try:
        _fsync_write(Path(tmp), data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _valid(meta, run_id: str, weights_sha256) -> bool:
    """Whether ``meta`` is a whole, unaltered entry of ``run_id`` whose weights hash to
    ``weights_sha256()`` (called last: hashing is the costly part)."""
    return (
        isinstance(meta, dict)
        and meta.get("format") == FORMAT
        and meta.get("run_id") == run_id
        and meta.get("checksum") == meta_checksum(meta)
        and meta.get("weights_sha256") == weights_sha256()
    )


MAX_RUN_ZIP_BYTES = 2 << 30  # a run's files in a zip, unpacked (vgg16's weights: 0.5 GiB)


def _run_files(zf) -> dict[str, bytes]:
    """The files of a run zip: only a run's names, none encrypted, within MAX_RUN_ZIP_BYTES,
    each read no further than the size it declares (a zip bomb stops there)."""
    from core import UserError

    allowed = {WEIGHTS, META, TEST_PROBS}
    infos = zf.infolist()
    names = [i.filename for i in infos]
    whole = len(set(names)) == len(names) and {WEIGHTS, META} <= set(names) <= allowed
    if not whole:
        shown = ", ".join(sorted(names)[:5]) or "nothing"
        raise UserError(f"a run zip holds {WEIGHTS}, {META} and perhaps {TEST_PROBS}, nothing "
                        f"else (this one: {shown})")  # fmt: skip
    if sum(i.file_size for i in infos) > MAX_RUN_ZIP_BYTES:
        raise UserError(f"the zip unpacks to more than {MAX_RUN_ZIP_BYTES >> 30} GiB: refused")
    files = {}
    for info in infos:
        if info.flag_bits & 0x1:
            raise UserError("the zip is password-protected: export the run again without one")
        with zf.open(info) as f:
            blob = f.read(info.file_size + 1)
        if len(blob) != info.file_size:
            raise UserError(f"{info.filename} in the zip is not the size it declares: refused")
        files[info.filename] = blob
    return files


class Store:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_root()
        self.runs = self.root / "runs"
        self.locks = self.root / "locks"
        self.derived = self.root / DERIVED

    def path(self, run_id: str) -> Path:
        if not (len(run_id) == 20 and all(c in "0123456789abcdef" for c in run_id)):
            raise ValueError(f"not a run id: {run_id!r}")
        return self.runs / run_id

    # -- reading ---------------------------------------------------------------------------
    def meta(self, run_id: str) -> dict | None:
        """The verified metadata of a run, or None if it is absent, partial or altered.

        The weights are hashed once per version of the files (see RACY_NS); each call gets
        its own copy of the metadata, parsed again from the verified text."""
        folder = self.path(run_id)
        key = str(folder.absolute())
        try:
            files = (_signature(folder / META), _signature(folder / WEIGHTS))
            with _verified_lock:
                known = _verified.get(key)
            if known is not None and known[0] == files:
                return json.loads(known[1])
            text = (folder / META).read_text()
            meta = json.loads(text)
            ok = _valid(meta, run_id, lambda: file_sha256(folder / WEIGHTS))
            # Remembered only if nothing changed while we read, and not too recently.
            unchanged = files == (_signature(folder / META), _signature(folder / WEIGHTS))
            if ok and unchanged and _settled(files):
                with _verified_lock:
                    _verified[key] = (files, text)
                    _verified.move_to_end(key)
                    while len(_verified) > MAX_VERIFIED:
                        _verified.popitem(last=False)
        except (OSError, ValueError):
            return None
        return meta if ok else None

    def list(self) -> list[dict]:
        """Verified metadata of every stored run, newest first."""
        if not self.runs.is_dir():
            return []
        metas = []
        for folder in self.runs.iterdir():
            if folder.name.startswith("."):
                continue
            with contextlib.suppress(ValueError):
                if (meta := self.meta(folder.name)) is not None:
                    metas.append(meta)
        return sorted(metas, key=lambda m: m.get("created", 0), reverse=True)

    def load_model(self, run_id: str):
        """(model in eval mode on the CPU, meta). Raises KeyError when the run is missing."""
        from safetensors.torch import load_file

        from core import models
        from core.config import from_dict
        from core.models.base import InputSpec

        meta = self.meta(run_id)
        if meta is None:
            raise KeyError(run_id)
        spec = InputSpec(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in meta["input"].items()})  # fmt: skip
        model = models.build(from_dict(meta["config"]).model, spec)
        state = load_file(self.path(run_id) / WEIGHTS)  # safetensors: data only, no code
        if file_sha256(self.path(run_id) / WEIGHTS) != meta["weights_sha256"]:
            raise KeyError(run_id)  # replaced between the check and the read
        model.load_state_dict(state, strict=True)
        return model.eval(), meta

    def is_current(self, meta: dict) -> bool:
        """Whether today's code would give this run its id: its config still reads, and the
        declared versions (model family, trainer, data) are those it was trained under."""
        from core import UserError
        from core.config import from_dict

        try:
            return run_key(from_dict(meta["config"]), meta["dataset"]["identity"]) == meta["run_id"]
        except (UserError, KeyError, TypeError, ValueError):  # a config this code cannot read
            return False

    def size(self, run_id: str, derived: dict[str, int] | None = None) -> int:
        """Bytes on disk of a run: its folder and the data derived from it (``derived``: the
        derived bytes per run, ``derived_sizes()``, when sizing many runs)."""
        own = sum(f.stat().st_size for f in self.path(run_id).glob("*") if f.is_file())
        if derived is None:
            derived = {run_id: sum(f.stat().st_size for f in self.derived.glob(f"{run_id}-*"))}
        return own + derived.get(run_id, 0)

    def derived_sizes(self) -> dict[str, int]:
        """Bytes of derived data per run id, in one pass over the derived folder."""
        sizes: dict[str, int] = {}
        if self.derived.is_dir():
            for f in self.derived.iterdir():
                run_id, dash, _ = f.name.partition("-")
                if dash and len(run_id) == 20 and f.is_file():  # <run_id>-<what>: see run_file
                    sizes[run_id] = sizes.get(run_id, 0) + f.stat().st_size
        return sizes

    def overview(self) -> list[dict]:
        """A row per stored run, newest first: what the teacher's library and ``python -m
        core store list`` show (id, name, model, dataset, task, test accuracy or MSE, bytes
        on disk, when it was made, whether it is current)."""
        names, derived = self.names(), self.derived_sizes()
        return [{"run_id": m["run_id"], "name": names.get(m["run_id"], ""), "model": m["model"],
                 "dataset": m["dataset"]["name"], "task": m.get("task", "classify"),
                 "accuracy": m["test"].get("accuracy"), "mse": m["test"].get("mse"),
                 "bytes": self.size(m["run_id"], derived), "created": m.get("created", 0.0),
                 "current": self.is_current(m)}
                for m in self.list()]  # fmt: skip

    def stale(self) -> list[str]:
        """What ``prune`` deletes: the runs today's code cannot rebuild, and damaged ones."""
        return [m["run_id"] for m in self.list() if not self.is_current(m)] + self.damaged()

    def damaged(self) -> list[str]:
        """Run folders whose files do not make a whole, unaltered run (nothing can load them)."""
        if not self.runs.is_dir():
            return []
        found = []
        for folder in self.runs.iterdir():
            with contextlib.suppress(ValueError):
                if not folder.name.startswith(".") and self.meta(folder.name) is None:
                    found.append(folder.name)
        return sorted(found)

    def names(self) -> dict[str, str]:
        """The names people gave runs (run id -> name); a name is a label, not part of the
        run: it leaves the run's key and checksums alone."""
        try:
            names = json.loads((self.root / NAMES).read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(names, dict):
            return {}
        return {k: v for k, v in names.items() if isinstance(v, str)}

    # -- derived data ----------------------------------------------------------------------
    def derived_path(self, name: str) -> Path:
        """Where the derived file ``name`` is kept. A file derived from one run is named
        ``<run_id>-<what>`` (``run_file``), so that ``delete`` removes it with the run."""
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"not a derived file name: {name!r}")
        return self.derived / name

    def derived_lock(self, name: str) -> Path:
        """The lock file of derived file ``name``: held by the one process making it."""
        return self.derived_path(name).with_name(f".{name}.lock")

    def run_file(self, run_id: str, what: str) -> Path:
        """Where data derived from run ``run_id`` is kept (``what``: e.g. "test-probs.npy")."""
        self.path(run_id)  # a run id, or ValueError
        return self.derived_path(f"{run_id}-{what}")

    def read_array(self, path: Path, shape: tuple[int, ...]):
        """A float32 array of ``shape`` with finite values saved by ``write_array``, or None
        when absent, damaged or anything else (nothing is ever unpickled)."""
        import numpy as np

        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        ok = arr.dtype == np.float32 and arr.shape == shape and np.isfinite(arr).all()
        return arr if ok else None

    def write_array(self, path: Path, arr) -> Path:
        """Save ``arr`` as float32 .npy, atomically (``atomic_write``)."""
        import io

        import numpy as np

        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)
        return atomic_write(path, buf.getvalue())

    def test_probs(self, run_id: str):
        """The (test images, classes) probabilities saved when the run was trained, or None
        (an older run, an autoencoder, a damaged file)."""
        meta = self.meta(run_id)
        if meta is None or "classes" not in meta:
            return None
        shape = (meta["dataset"]["sizes"]["test"], len(meta["classes"]))
        return self.read_array(self.run_file(run_id, TEST_PROBS), shape)

    def save_test_probs(self, run_id: str, probs) -> Path:
        return self.write_array(self.run_file(run_id, TEST_PROBS), probs)

    # -- writing ---------------------------------------------------------------------------
    def set_name(self, run_id: str, name: str) -> str:
        """Name a run (an empty name removes it); returns the name as kept: printable
        characters only, at most MAX_NAME of them. At most MAX_NAMES names are kept (the
        oldest go first)."""
        self.path(run_id)  # a run id, or ValueError
        name = " ".join("".join(c for c in name if c.isprintable()).split())[:MAX_NAME]
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(self.root / f"{NAMES}.lock"):
            names = self.names()
            names.pop(run_id, None)
            if name:
                names[run_id] = name
            while len(names) > MAX_NAMES:
                names.pop(next(iter(names)))
            atomic_write(self.root / NAMES, json.dumps(names, ensure_ascii=False).encode())
        return name

    def lock(self, run_id: str) -> FileLock:
        self.locks.mkdir(parents=True, exist_ok=True)
        return FileLock(self.locks / f"{run_id}.lock")

    def save(self, run_id: str, model, meta: dict) -> dict:
        """Write weights and metadata atomically; returns the stored metadata."""
        from safetensors.torch import save

        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        blob = save(state)
        meta = dict(meta, format=FORMAT, run_id=run_id, created=time.time())
        meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
        meta["checksum"] = meta_checksum(meta)
        self._write_entry(run_id, {WEIGHTS: blob, META: json.dumps(meta, indent=1).encode()})
        return meta

    def _write_entry(self, run_id: str, files: dict[str, bytes]) -> None:
        """A run's folder written in a temporary folder, then renamed into place."""
        self.runs.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{run_id}-", dir=self.runs))
        try:
            for name, blob in files.items():
                _fsync_write(tmp / name, blob)
            final = self.path(run_id)
            if final.exists():  # a damaged entry we are replacing
                self._discard(final)
            os.rename(tmp, final)  # atomic: readers see the whole entry or none
            self._fsync_dir(self.runs)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def delete(self, run_id: str) -> None:
        """Remove a run and what was derived from it (its cached embedding maps)."""
        if self.path(run_id).exists():
            self._discard(self.path(run_id))
        if run_id in self.names():
            self.set_name(run_id, "")
        for derived in self.derived.glob(f"*{run_id}-*"):  # its files and their locks
            with contextlib.suppress(OSError):
                derived.unlink()

    def clean(self, older_than: float = 3600.0) -> None:
        """Remove temporary folders left by processes killed while saving."""
        if not self.runs.is_dir():
            return
        now = time.time()
        for folder in self.runs.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                if now - folder.stat().st_mtime > older_than:
                    shutil.rmtree(folder)

    def export_files(self, run_id: str) -> dict[str, bytes]:
        """A verified run's files (weights and metadata), to carry to another store."""
        if self.meta(run_id) is None:
            raise KeyError(run_id)
        return {name: (self.path(run_id) / name).read_bytes() for name in (WEIGHTS, META)}

    def import_files(self, run_id: str, files: dict[str, bytes]) -> dict:
        """Write a run exported by another store (a Ray node's), atomically; its checksums
        are verified before it is visible. Returns its metadata."""
        if set(files) != {WEIGHTS, META}:
            raise ValueError("a run is its weights and its metadata")
        meta = json.loads(files[META])
        if not _valid(meta, run_id, lambda: hashlib.sha256(files[WEIGHTS]).hexdigest()):
            raise ValueError(f"run {run_id}: its files do not match their checksums")
        self._write_entry(run_id, files)
        return meta

    # What a Ray node's store made beside a run, and carries back with it: read back with
    # the checks of read_array (float32, the run's shape, finite) before they are used.
    CARRIED = (TEST_PROBS, "val-logits.npy", "live-map.npy")

    def derived_files(self, run_id: str) -> dict[str, bytes]:
        """The run's carried derived files that exist, by name."""
        found = {}
        for what in self.CARRIED:
            path = self.run_file(run_id, what)
            if path.is_file() and path.stat().st_size <= 64 * 2**20:
                found[what] = path.read_bytes()
        return found

    def import_derived(self, run_id: str, files: dict[str, bytes]) -> None:
        """Write ``derived_files`` of a stored run from another store (names outside CARRIED
        are ignored: a node cannot write anywhere else)."""
        for what, blob in files.items():
            if what in self.CARRIED and isinstance(blob, bytes):
                atomic_write(self.run_file(run_id, what), blob)

    def export_zip(self, run_id: str, out: Path) -> Path:
        """One run in one zip, to carry to another machine: its weights, its metadata (with
        their checksums) and, when kept, its test probabilities. Written atomically."""
        import io
        import zipfile

        files = self.export_files(run_id)
        probs = self.run_file(run_id, TEST_PROBS)
        if probs.is_file():
            files[TEST_PROBS] = probs.read_bytes()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, blob in files.items():
                zf.writestr(name, blob)
        return atomic_write(Path(out), buf.getvalue())

    def import_zip(self, source, name: str | None = None) -> dict:
        """A run zip made by ``export_zip`` (a path, or a file object called ``name``: an
        upload) into this store, verified by its checksums before it is visible (UserError,
        one line, for anything else); returns its metadata."""
        import zipfile

        from core import UserError

        name = name or Path(source).name
        try:
            with zipfile.ZipFile(source) as zf:
                files = _run_files(zf)
        except (zipfile.BadZipFile, OSError, EOFError, zipfile.LargeZipFile) as e:
            raise UserError(f"{name} is not a readable zip ({e})") from None
        try:
            meta = json.loads(files[META])
            run_id = meta["run_id"]
            self.path(run_id)  # shaped like a run id, or ValueError
            probs = files.pop(TEST_PROBS, None)
            meta = self.import_files(run_id, files)
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{name} is not a run of CNN Classroom: {e}") from None
        if probs is not None:
            import io

            import numpy as np

            try:
                arr = np.load(io.BytesIO(probs), allow_pickle=False)
            except (OSError, ValueError, EOFError):
                arr = None  # derived data: recomputed when a page needs it
            if arr is not None:
                self.write_array(self.run_file(run_id, TEST_PROBS), arr)
        return meta

    def _discard(self, folder: Path) -> None:
        trash = folder.with_name(f".tmp-trash-{folder.name}-{os.getpid()}-{time.time_ns()}")
        os.rename(folder, trash)  # out of the way in one step, then delete at leisure
        shutil.rmtree(trash, ignore_errors=True)

    @staticmethod
    def _fsync_dir(folder: Path) -> None:
        with contextlib.suppress(OSError):  # not every OS can open a directory
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


__all__ = ["Store", "code_version", "default_root", "run_key", "versions"]
