"""Which torch device a command or a trial runs on, and how a trial holds and gives back its share of a GPU."""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import re

import torch

from nada_sweep.errors import UserError, quoted
from nada_sweep.metric_rules import GPU_PEAK_MEM


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_KEPT_FREE_BYTES = 2**30


class CudaUnavailable(RuntimeError):
    """A trial that Ray gave GPUs finds no CUDA device that torch can use."""


def device_choices() -> list[str]:
    """The device names this machine accepts: auto, cpu, and cuda, cuda:0 ... when torch sees CUDA GPUs."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["auto", "cpu", *(["cuda", *(f"cuda:{index}" for index in range(gpus))] if gpus else [])]


def resolve_device(name: str, option: str = "device") -> torch.device:
    """`auto` (CUDA when torch sees a GPU, else CPU), `cpu`, `cuda` or `cuda:N`; UserError naming `option` and
    the valid names for anything else (another device type, a GPU this machine lacks)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    valid = device_choices()
    if name in valid:
        return torch.device(name)
    if re.fullmatch(r"cuda(:\d+)?", name) and not torch.cuda.is_available():
        raise UserError(f"{option}: {quoted(name)} asked for, but this machine has no usable CUDA GPU (valid here: "
                        f"{', '.join(valid)})")
    raise UserError(f"{option}: {quoted(name)} is not a device; valid here: {', '.join(valid)}")


def local_resources() -> tuple[float, float]:
    """CPUs and GPUs of this machine as a Ray started here counts them (the CPUs this process may use)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return float(cpus), float(torch.cuda.device_count() if torch.cuda.is_available() else 0)


@functools.cache
def reuse_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for the next tensors instead of handing it back to the kernel.

    By default each tensor above malloc's mmap threshold (at most 32 MiB) is a fresh mapping that the kernel
    zero-fills page by page on first touch, and freed heap is trimmed at once: CPU training allocates such
    tensors every step (a 16-sample step at 512 channels took 380k page faults and a fifth of its time for them,
    benchmarks/README.md). For the whole process, once; False where the C library has no mallopt (not glibc).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEPT_FREE_BYTES))


def cuda_report() -> str:
    """What torch says about CUDA here: its version, the CUDA it was built for, the devices it sees."""
    built = torch.version.cuda or "none (a CPU-only build)"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (f"torch {torch.__version__} built for CUDA {built}; torch.cuda.is_available() = "
            f"{torch.cuda.is_available()}, torch.cuda.device_count() = {torch.cuda.device_count()}, "
            f"CUDA_VISIBLE_DEVICES = {'unset' if visible is None else repr(visible)}")


def require_cuda(gpus: float) -> torch.device:
    """The CUDA device of a trial that Ray gave `gpus` GPUs; CudaUnavailable when torch cannot use one.

    Without this, device `auto` would quietly pick the CPU (a driver too old for torch's CUDA build, a wrong
    CUDA_VISIBLE_DEVICES) and the trial would hold its GPU share while training at CPU speed.
    """
    if not torch.cuda.is_available():
        raise CudaUnavailable(
            f"this trial was given {gpus:g} GPU by Ray, but torch cannot use CUDA ({cuda_report()}); it would "
            "train on the CPU while holding the GPU. Install a torch build that this machine's NVIDIA driver "
            "supports, check CUDA_VISIBLE_DEVICES, or set resources.gpus: 0 to train on CPUs")
    return torch.device("cuda", torch.cuda.current_device())


def use_expandable_segments() -> None:
    """Ask torch's CUDA allocator for growable segments (less fragmentation when trials share a GPU).

    Read once, when the process first touches CUDA: set before that, and never over the user's own setting.
    """
    if not torch.cuda.is_initialized() and not any(
            name in os.environ for name in ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")):
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"


def claim_gpu_share(gpus: float) -> torch.device:
    """A GPU trial's device, its allocator capped at the trial's share (`gpus` <= 1) of the GPU's memory.

    With `gpus: 0.5` two trials share one GPU; the cap makes the one that outgrows its half fail with an
    out-of-memory error instead of starving the other.
    """
    device = require_cuda(gpus)
    torch.cuda.set_per_process_memory_fraction(float(min(gpus, 1.0)), device)
    return device


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_metrics(device: torch.device) -> dict[str, float]:
    """{GPU_PEAK_MEM: GiB} on CUDA (the most the allocator held for tensors since reset_peak_memory), else {}."""
    if device.type != "cuda":
        return {}
    return {GPU_PEAK_MEM: round(torch.cuda.max_memory_allocated(device) / 2**30, 3)}


def release_gpu_memory() -> None:
    """Give the allocator's cached blocks back once a trial's tensors are gone.

    A reused worker otherwise keeps the previous trial's peak reserved, memory the trial sharing its GPU
    cannot have. gc first: cycles (a compiled module, an exception's frames) may still hold tensors.
    """
    if torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()
