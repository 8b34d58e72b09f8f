"""Where and how fast to compute: device, thread count, bfloat16 autocast."""

from __future__ import annotations

import functools
import os

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
    containers), and denormal floats flushed to zero: tiny gradients and Adam moments
    otherwise fall into the CPU's slow path (about a quarter of cnn_bn's training time)."""
    torch.set_flush_denormal(True)  # this thread, and threads it starts later
    n = threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
