"""Classify one image with a stored run: the work behind the Gradio tab, without any UI.

``Classifier`` picks the runs an image can be sent to, loads each model once, reads an image
file through ``core.preprocess``'s guards and answers with class probabilities and, on
request, where the model looked. Every failure a user can cause is a ``UserError``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import UserError, preprocess, tasks
from core.store import Store

MAX_FILE_BYTES = 20 * 1024 * 1024  # an upload larger than this is not read at all
DEFAULT_PRESET = "fast"  # trained once when the store has nothing to classify with
# The dataset the tab is for, as a run's config names it (never its display name, which is
# "Fashion-MNIST"): the default preset's; where Fashion-MNIST is missing, digits stand in.
TAB_DATASET = "fashion-mnist"
BUILTIN = ("fashion-mnist", "digits")  # core.data.BUILTIN, without importing the data code
QUEUE_OWNER = "classify-tab"  # the owner of that job in the class's queue


class FileTooLarge(UserError):
    def __init__(self, size: int):
        self.size = size
        super().__init__(
            f"the file has {size / 2**20:.1f} MB; the limit is {MAX_FILE_BYTES / 2**20:.0f} MB"
        )


class NoRun(UserError):
    def __init__(self, run_id: str | None = None):
        self.run_id = run_id
        super().__init__(
            f"run {run_id} is not in the store" if run_id else "no trained model to classify with"
        )


@dataclass
class Prediction:
    probs: np.ndarray  # (num_classes,) softmax probabilities
    x: object  # the model's input, float32 (1, C, H, W) in [0, 1]
    classes: list[str]
    run_id: str

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most likely (class name, probability), most likely first."""
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(self.classes[i], float(self.probs[i])) for i in order]


def usable(meta: dict) -> bool:
    """Whether an image can be sent to this run (classifiers of grey or colour images)."""
    task = tasks.TASKS.get(meta.get("task", tasks.Classify.name))
    return isinstance(task, tasks.Classify) and meta.get("input", {}).get("channels") in (1, 3)


def dataset_of(meta: dict) -> str:
    """The dataset a run was trained on, as its config names it ("fashion-mnist", "digits",
    or a photo folder's or zip's path)."""
    return meta.get("config", {}).get("data", {}).get("dataset", "")


def rank(metas: list[dict]) -> list[dict]:
    """Usable runs, best first: the tab's own dataset, then the other built-in one, then
    photo datasets (accuracies on different datasets do not compare: a two-class zip run at
    100% is no better than a Fashion-MNIST one at 91%), each by test accuracy, then newest."""

    def key(meta: dict) -> tuple:
        dataset = dataset_of(meta)
        return (dataset == TAB_DATASET, dataset in BUILTIN, meta["test"]["accuracy"],
                meta.get("created", 0))  # fmt: skip

    return sorted((m for m in metas if usable(m)), key=key, reverse=True)


class Classifier:
    """Stored runs -> predictions; one instance serves every session (thread-safe)."""

    def __init__(self, store: Store | None = None, cache_size: int = 4):
        self.store = store or Store()
        self.cache_size = cache_size
        self._models: OrderedDict[str, tuple] = OrderedDict()  # run id -> (model, meta), LRU
        self._lock = threading.Lock()
        self._jobs = None  # the job queue, once an empty store needed a run

    def runs(self) -> list[dict]:
        """Metadata of the runs an image can go to, best first."""
        return rank(self.store.list())

    def best(self) -> str | None:
        """The run the tab and ``/classify`` answer with unless told otherwise: the best of
        a built-in dataset. A run on somebody's own photos is never everyone's default."""
        runs = self.runs()
        return runs[0]["run_id"] if runs and dataset_of(runs[0]) in BUILTIN else None

    def ensure_run(self, progress: Callable[[float, str], None] | None = None) -> str:
        """The best run's id; with an empty store, the ``fast`` preset is trained first, once,
        as a job of the class's queue (a worker process trains it, never this server; a
        second caller, here or in another process, waits for the same job). ``progress``
        gets (fraction done, "training" or "waiting")."""
        if (run_id := self.best()) is not None:
            return run_id
        from core import presets

        with self._lock:  # one caller of this process submits; the others find its job
            queue = self._queue()
            live = [j for j in queue.jobs(QUEUE_OWNER) if not j.is_final]
            job = live[0] if live else queue.submit(presets.get(DEFAULT_PRESET).config,
                                                    QUEUE_OWNER)  # fmt: skip
        while not job.is_final:
            if progress is not None:
                p = job.progress
                if job.state == "running" and p:
                    done = (p["epoch"] - 1 + p["batch"] / p["batches"]) / p["epochs"]
                    progress(min(done, 1.0), "training")
                else:
                    progress(0.0, "waiting")
            time.sleep(0.25)
            job = queue.get(job.id) or job
        if job.state == "done" and job.run_id:
            return job.run_id
        why = job.message or job.state
        raise UserError(f"training the {DEFAULT_PRESET} preset did not finish: {why}")

    def _queue(self):
        """The class's job queue on this store (made on first use: only an empty store
        needs it). Call with ``self._lock`` held."""
        if self._jobs is None:
            from core.jobs import JobQueue

            self._jobs = JobQueue(self.store)
        return self._jobs

    def model(self, run_id: str) -> tuple:
        """(model in eval mode, meta), loaded once and kept (the last ``cache_size`` used)."""
        with self._lock:
            if run_id in self._models:
                self._models.move_to_end(run_id)
                return self._models[run_id]
        try:
            loaded = self.store.load_model(run_id)
        except (KeyError, ValueError):
            raise NoRun(run_id) from None
        with self._lock:
            self._models[run_id] = loaded
            while len(self._models) > self.cache_size:
                self._models.popitem(last=False)
        return loaded

    def read(self, path: str | Path, inside: str | Path | None = None):
        """An image file -> a lazily opened PIL image, through core.preprocess's guards.

        ``inside``: the folder the file must be in (a server's upload folder); anything
        resolving elsewhere, through ``..`` or a link, is refused as unreadable.
        """
        path = Path(path)
        if inside is not None and not path.resolve().is_relative_to(Path(inside).resolve()):
            raise preprocess.UnreadableImage()
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise FileTooLarge(size)
            data = path.read_bytes()
        except OSError:
            raise preprocess.UnreadableImage() from None
        return preprocess.open_image(data)

    def predict(self, image, run_id: str) -> Prediction:
        """A PIL image -> the run's probabilities for it, framed as the run's data was."""
        from core import explain

        model, meta = self.model(run_id)
        spec = meta["input"]
        x = preprocess.prepare(image, spec["channels"], spec["size"])
        return Prediction(explain.probabilities(model, x), x, meta["classes"], run_id)

    def heatmap(self, prediction: Prediction, target: int | None = None) -> tuple[np.ndarray, str]:
        """(where the model looked for ``target``, default the top class: (H, W) in [0, 1],
        "hires_cam" or "saliency"). HiResCAM, not Grad-CAM: Grad-CAM's map is empty for
        about one confident answer in six with our flatten-and-dense heads (core.explain);
        models without convolutions get pixel saliency."""
        from core import explain

        model, _ = self.model(prediction.run_id)
        method = "hires_cam" if explain.conv_layers(model) else "saliency"
        return explain.hires_cam(model, prediction.x, target), method
