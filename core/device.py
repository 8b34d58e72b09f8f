"""Where and how fast to compute: device, thread count, bfloat16 autocast."""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys

import torch


def cores() -> int:
    """CPU cores this process may use (cgroup/affinity aware on Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def pick(device: str = "auto") -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        from core import UserError

        raise UserError("device cuda was asked for but no CUDA GPU is available")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(device: torch.device, setting: str = "auto") -> bool:
    if setting != "auto":
        return setting == "on"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else the platform's machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device, bf16: str = "auto") -> dict:
    """Where a benchmark ran, for its JSON: the device type and name, whether bfloat16
    autocast was on, and the CPU threads."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"device": device.type, "device_name": name, "bf16": use_bf16(device, bf16),
            "threads": threads()}  # fmt: skip


THREADS_ENV = "CNN_CLASSROOM_THREADS"


def threads() -> int:
    """Intra-op threads for training: one per core, unless CNN_CLASSROOM_THREADS says fewer
    (a sweep worker, or the classify tab, sharing the cores with other work)."""
    try:
        return max(1, int(os.environ[THREADS_ENV]))
    except (KeyError, ValueError):
        return cores()


def set_threads() -> None:
    """``threads()`` intra-op threads (the default can under- or over-subscribe in
    containers), denormal floats flushed to zero: tiny gradients and Adam moments otherwise
    fall into the CPU's slow path (about a quarter of cnn_bn's training time), and freed
    memory kept for reuse (``keep_freed_memory``)."""
    keep_freed_memory()
    torch.set_flush_denormal(True)  # this thread, and threads it starts later
    n = threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for the next allocation instead of returning it to the
    kernel; True when set. Linux with glibc only; once per process.

    Every training step allocates and frees the same large tensors (cnn_bn: 9.6 MB feature
    maps at batch 256). By default glibc serves such blocks with fresh ``mmap`` calls and
    trims the heap's top, so each step faulted in 10-14 MB of new zeroed pages: 2,500-3,400
    page faults per step, and cnn_bn trained slower than with this (figures: README,
    Benchmarks). (Intel's guide to PyTorch on CPUs swaps in jemalloc or tcmalloc for the same
    reason.) The cost: the process keeps its peak heap instead of shrinking after a run.
    """
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # from glibc's malloc.h
    return all(
        mallopt(option, value) == 1
        for option, value in (
            (m_mmap_threshold, 32 << 20),  # glibc's largest: blocks up to 32 MB from the heap
            (m_trim_threshold, 1 << 30),  # give back only a free top above 1 GB
            (m_top_pad, 64 << 20),  # grow the heap 64 MB at a time
        )
    )
