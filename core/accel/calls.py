"""How Python calls the Numba tasks in ``fused.py``: a named, checked calling convention.

A task is a C function of one argument: a block of int64 slots,

    [channel counter, n, c, hh, ww, address of array 1, address of array 2, ...]

that takes channels off the counter (an atomic add) until none are left, so that any
number of threads can run it at once. The arrays come in the order its ``Signature``
declares them, each with a dtype and a shape written in the sizes (``"n*c, hh//2*(ww//2)"``).
The Numba side trusts that order, those dtypes and shapes: a wrong call would read or
write memory it does not own. So ``Signature.pack`` checks every array (the name, dtype,
shape, C-contiguity, alignment, and that an output is writeable) and raises ValueError on
any mismatch before an address is taken.

The threads are PyTorch's own OpenMP workers (``openmp``): a second pool (Numba's, or
Python threads) gained nothing, because PyTorch's OpenMP worker keeps spinning on the other
core for a while after each of its parallel ops, waiting for the next.
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SIZES = ("n", "c", "hh", "ww")  # images, channels, height and width of the full-size maps
HEADER = 1 + len(SIZES)  # the counter and the sizes come before the addresses


@dataclass(frozen=True)
class Arg:
    """One array a task takes: ``shape`` is a comma-separated list of expressions in the
    sizes (n, c, hh, ww); ``out``: the task writes it."""

    name: str
    dtype: type
    shape: str
    out: bool = False


class Signature:
    """The arrays a task takes, in slot order; ``pack`` checks a call against them."""

    def __init__(self, name: str, *args: Arg):
        self.name, self.args = name, args
        self.slots = HEADER + len(args)  # the block's length, which the task reads
        # Expressions of our own constants, over the four sizes and nothing else.
        self._shapes = [compile(f"({a.shape},)", f"<{name}.{a.name}>", "eval") for a in args]

    def shape(self, arg: Arg, sizes: dict[str, int]) -> tuple[int, ...]:
        code = self._shapes[self.args.index(arg)]
        return eval(code, {"__builtins__": {}}, dict(sizes))  # our constants (see __init__)

    def pack(self, sizes: tuple[int, ...], arrays: dict[str, np.ndarray]) -> np.ndarray:
        """The argument block for ``sizes`` (n, c, hh, ww) and ``arrays`` by name; ValueError
        unless every array is exactly what the task reads or writes."""
        if len(sizes) != len(SIZES) or not all(type(s) is int and s > 0 for s in sizes):
            raise ValueError(f"{self.name}: sizes must be {len(SIZES)} positive ints, got {sizes}")
        named = dict(zip(SIZES, sizes, strict=True))
        if named["hh"] % 2 or named["ww"] % 2:
            raise ValueError(f"{self.name}: the maps' sides must be even, got {sizes[2:]}")
        expected = [a.name for a in self.args]
        if sorted(arrays) != sorted(expected):
            raise ValueError(f"{self.name} takes the arrays {expected}, got {sorted(arrays)}")
        addresses = []
        for arg in self.args:
            a = arrays[arg.name]
            what = f"{self.name}: {arg.name}"
            if not isinstance(a, np.ndarray):
                raise ValueError(f"{what} must be a NumPy array, got {type(a).__name__}")
            if a.dtype != arg.dtype:
                raise ValueError(f"{what} must be {np.dtype(arg.dtype)}, got {a.dtype}")
            shape = self.shape(arg, named)
            if a.shape != shape:
                raise ValueError(f"{what} must have shape ({arg.shape}) = {shape}, got {a.shape}")
            if not a.flags.c_contiguous:
                raise ValueError(f"{what} must be C-contiguous, got strides {a.strides}")
            if a.ctypes.data % a.dtype.alignment:
                raise ValueError(f"{what} is not aligned to {a.dtype.alignment} bytes")
            if arg.out and not a.flags.writeable:
                raise ValueError(f"{what} is written by the task and must be writeable")
            addresses.append(a.ctypes.data)
        return np.array([0, *sizes, *addresses], np.int64)


class Task:
    """A compiled task (a Numba cfunc) with its signature: ``task(sizes, **arrays)``."""

    def __init__(self, cfunc, signature: Signature):
        self.cfunc, self.signature = cfunc, signature

    def __call__(self, sizes: tuple[int, ...], **arrays: np.ndarray) -> None:
        block = self.signature.pack(tuple(int(s) for s in sizes), arrays)
        channels = sizes[1]
        threads = min(torch.get_num_threads(), channels)
        parallel = openmp() if threads > 1 else None
        # The arrays stay referenced (``arrays``) until the call returns.
        if parallel is not None:
            parallel(self.cfunc.address, block.ctypes.data, threads, 0)
        else:
            self.cfunc.ctypes(block.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)))


@functools.cache
def openmp():
    """``GOMP_parallel`` of the OpenMP runtime PyTorch's CPU ops run on, or None (the tasks
    then run on the calling thread alone).

    Looked up without loading anything: first the runtime PyTorch ships in ``torch/lib``
    if it is already loaded (RTLD_NOLOAD), then in the process's global namespace (a
    runtime PyTorch was linked against elsewhere, loaded through ``libtorch_global_deps``).
    LLVM's and Intel's OpenMP runtimes export the same entry point as GNU's.
    """
    if not torch.backends.openmp.is_available():
        return None
    libraries = sorted(Path(torch.__file__).parent.joinpath("lib").glob("lib*omp*.so*"))
    for library in [*map(str, libraries), None]:  # None: the global namespace
        try:
            run = ctypes.CDLL(library, mode=os.RTLD_NOLOAD).GOMP_parallel
        except (OSError, AttributeError):
            continue
        run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        run.restype = None
        return run
    return None
