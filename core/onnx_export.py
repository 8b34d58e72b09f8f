"""A stored run as an ONNX model, for tools outside the app (onnxruntime, a phone, a browser).

``export(store, run_id)`` gives the file's bytes only once onnxruntime, running them, agrees
with PyTorch on the run's own test images: the same top-1 class on every image and logits
within ``TOLERANCE``. The model takes float32 images (N, C, H, W) with pixels in [0, 1] and
normalises them itself (``images`` in, ``logits`` out; an autoencoder gives reconstructions);
the class names and the input's description travel in the file's metadata.

An export is kept beside the run (``<run_id>-model.onnx`` among its derived files), so a
second download costs nothing and ``Store.delete`` removes it with the run.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass

import numpy as np

from core import UserError
from core.store import Store, atomic_write

CHECK_IMAGES = 1000  # test images onnxruntime and PyTorch must agree on
TOLERANCE = 1e-4  # the largest absolute logit difference allowed
OPSET = 18
FILE = "model.onnx"  # the run's derived file (Store.run_file)


@dataclass(frozen=True)
class Check:
    """How the export agreed with PyTorch."""

    images: int
    same_top1: int  # images where both give the same class (for a classifier)
    max_abs_diff: float

    @property
    def passed(self) -> bool:
        return self.same_top1 == self.images and self.max_abs_diff <= TOLERANCE


def export(store: Store, run_id: str, check_images: int = CHECK_IMAGES) -> tuple[bytes, Check]:
    """The run as ONNX bytes, with the check they passed. Raises UserError when the run is
    damaged or the export does not agree with PyTorch (nothing is kept then)."""
    from filelock import FileLock

    meta = store.meta(run_id)
    if meta is None:
        raise UserError(f"run {run_id} is damaged (its files do not check out): nothing to export")
    kept = store.run_file(run_id, FILE)
    with FileLock(store.derived_lock(kept.name)):  # one process exports, the others wait
        model, meta = store.load_model(run_id)
        images = _test_images(meta, check_images)
        if kept.is_file():
            blob = kept.read_bytes()
            check = compare(model, blob, images)
            if check.passed:
                return blob, check
        blob = to_onnx(model, meta)
        check = compare(model, blob, images)
        if not check.passed:
            raise UserError(
                f"run {run_id}: the ONNX export disagrees with PyTorch (top-1 on "
                f"{check.same_top1} of {check.images} test images, largest logit difference "
                f"{check.max_abs_diff:.2g}): not exported"
            )
        atomic_write(kept, blob)
    return blob, check


def to_onnx(model, meta: dict) -> bytes:
    """The model (eval mode, CPU) as ONNX bytes, any batch size, its metadata attached."""
    import onnx
    import torch

    spec = meta["input"]
    example = torch.rand(2, spec["channels"], spec["size"], spec["size"])
    batch = torch.export.Dim("batch", min=1, max=65536)
    # The exporter narrates its steps on stdout: a command's output is one line per action.
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
    proto = program.model_proto
    proto.doc_string = (
        f"CNN Classroom run {meta['run_id']}: {meta['model']} trained on "
        f"{meta['dataset']['name']}. Input 'images': float32 (N, {spec['channels']}, "
        f"{spec['size']}, {spec['size']}), pixels in [0, 1] (normalised inside the model). "
        "Output 'logits': one score per class (softmax gives probabilities)."
    )
    onnx.helper.set_model_props(proto, {
        "run_id": meta["run_id"],
        "model": meta["model"],
        "dataset": meta["dataset"]["name"],
        "classes": json.dumps(meta.get("classes", [])),
        "input": json.dumps({"channels": spec["channels"], "size": spec["size"], "range": [0, 1]}),
        "test_accuracy": str(meta["test"].get("accuracy", "")),
    })  # fmt: skip
    return proto.SerializeToString()


def session(blob: bytes):
    """An onnxruntime session for ONNX bytes, on the CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    return onnxruntime.InferenceSession(blob, options, providers=["CPUExecutionProvider"])


def compare(model, blob: bytes, images: np.ndarray) -> Check:
    """Run ``images`` (uint8, N C H W) through PyTorch and through onnxruntime."""
    from core.train import predict_logits

    ours = predict_logits(model, images).numpy()
    theirs = session(blob).run(None, {"images": images.astype(np.float32) / 255.0})[0]
    if theirs.shape != ours.shape:
        return Check(len(images), 0, float("inf"))
    same = ours.argmax(1) == theirs.argmax(1) if ours.ndim == 2 else np.ones(len(images), bool)
    diff = float(np.abs(ours - theirs).max()) if ours.size else 0.0
    return Check(len(images), int(same.sum()), diff)


def _test_images(meta: dict, count: int) -> np.ndarray:
    """The first ``count`` test images of the run's dataset (uint8, N C H W)."""
    from core.runs import run_data

    return np.ascontiguousarray(run_data(meta).x_test[:count])
