"""CPU training speed-ups, applied to a built plain model by one call: ``accelerate(model)``.

The models in ``core.models`` are plain ``torch.nn``. ``accelerate`` swaps, in place, the
layers it has a faster CPU path for by subclasses of theirs (``modules.py``): the 2x2
max-pool, dropout's mask, the gray (one input channel) conv's weight gradient, BatchNorm ->
pool -> ReLU as one Numba kernel (with the gray conv before it, one kernel for all four),
and a row-major layout for the body's input. A swapped layer keeps its parameters, buffers,
hooks and state-dict keys, so weights saved from an accelerated model load into a plain one
and back. Each falls back to the plain layer where it does not apply (a GPU, bfloat16,
evaluation, hooks, odd sizes), so an accelerated model can be used anywhere a plain one can.

One switch: ``CNN_CLASSROOM_ACCEL=off`` (or the older ``CNN_CLASSROOM_KERNELS=off``) keeps
every layer plain, read at each call. The Numba kernels (``fused.py``, optional: without
Numba the other speed-ups still apply) compile on first use, about 9 s, cached in
``cache_dir()`` (``warm()`` does it ahead, as ``make setup`` does).

    model = accelerate(models.build(cfg.model, spec))  # core.train, the one caller
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from types import ModuleType

from torch import nn

SWITCH = "CNN_CLASSROOM_ACCEL"  # "off": always the plain layers (to compare, or debug)
OLD_SWITCH = "CNN_CLASSROOM_KERNELS"  # its earlier name, still read
_OFF = {"off", "0", "no", "false"}


def enabled() -> bool:
    """Whether the speed-ups are on (the default); read at every call."""
    return not any(os.environ.get(name, "").lower() in _OFF for name in (SWITCH, OLD_SWITCH))


def cache_dir() -> Path:
    """Where Numba caches the compiled kernels: the user's cache folder, never the package."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnn-classroom" / "numba"


def _install_cache_locator() -> None:
    """Have Numba cache this package's functions in ``cache_dir()`` (a locator that claims
    only files of this folder, tried before Numba's own), whatever NUMBA_CACHE_DIR says for
    other packages' functions."""
    from numba.core import caching

    here = Path(__file__).resolve().parent

    class Locator(caching.UserProvidedCacheLocator):
        def __init__(self, py_func, py_file):
            super().__init__(py_func, py_file)
            self._cache_path = str(cache_dir() / self.get_suitable_cache_subpath(py_file))

        @classmethod
        def from_function(cls, py_func, py_file):
            if Path(py_file).resolve().parent != here:
                return None
            # The mixin's from_function: the file exists and the folder is writable.
            return caching._SourceFileBackedLocatorMixin.from_function.__func__(
                cls, py_func, py_file
            )

    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # renamed in Numba 0.61
    classes = impl._locator_classes
    if not any(c.__name__ == "Locator" and c.__module__ == __name__ for c in classes):
        classes.insert(0, Locator)


@functools.cache
def kernels() -> ModuleType | None:
    """The compiled kernels (``core.accel.fused``), or None when Numba is missing."""
    try:
        _install_cache_locator()
        from core.accel import fused
    except ImportError:
        return None
    return fused


def warm() -> bool:
    """Compile the kernels, or load them from the cache, now rather than in the first
    training step; False when Numba is missing."""
    fused = kernels()
    if fused is None:
        return False
    for task in fused.TASKS:
        task.cfunc.address  # noqa: B018 - compiled (or loaded) when first asked for
    return True


def accelerate(model: nn.Module) -> nn.Module:
    """``model`` with its layers swapped in place for the fast CPU ones (see the module
    doc), and returned; unchanged when the switch is off or the model is not on the CPU.
    Applying it twice changes nothing more."""
    from core.accel import modules as fast

    if not enabled() or any(p.device.type != "cpu" for p in model.parameters()):
        return model
    covers = {
        nn.MaxPool2d: (fast.MaxPool2x2, fast.is_pool2x2),
        nn.Dropout: (fast.Dropout, lambda m: True),
        nn.Conv2d: (fast.GrayConv2d, fast.is_gray_conv),
    }
    for m in model.modules():
        # Exact types only: a subclass (a backbone's SamePadConv) has its own forward.
        new, applies = covers.get(type(m), (None, None))
        if new is not None and applies(m):
            m.__class__ = new  # the same object: parameters, buffers and hooks stay
    for m in model.modules():
        if type(m) is nn.Sequential:
            layers = list(m)
            if any(fast.bn_pool_relu(layers, i) for i in range(len(layers))):
                m.__class__ = fast.FusedSequential
    body = getattr(model, "body", None)
    if isinstance(body, nn.Module) and fast.row_major not in body._forward_pre_hooks.values():
        body.register_forward_pre_hook(fast.row_major)
    return model


__all__ = ["SWITCH", "accelerate", "cache_dir", "enabled", "kernels", "warm"]
