"""The metric rules every part of nada-sweep shares: names, direction, the best-step rule, defaults.

Torch-free on purpose: the report, the sweep driver and the trainer all import it, and `nada-sweep report`
must not load torch. The metrics themselves are computed in nada_sweep.adapt.evaluate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

METRIC_NAMES = ("clip_quality", "clip_direction", "diversity", "diversity_ratio", "preservation")

# In each eval line of a run on CUDA: the most GiB the allocator held for tensors since the run (or its
# resumption) started. A resource reading, not a quality metric: nothing is selected by it.
GPU_PEAK_MEM = "gpu_peak_mem_gb"

# Higher is better for every metric we select by except the loss.
LOWER_IS_BETTER = frozenset({"loss"})

# What a sweep may pick its best trial and step by.
SELECTABLE = (*METRIC_NAMES, "loss")
SelectMetric = Literal[SELECTABLE]  # type: ignore[valid-type]

DEFAULT_SELECT_METRIC = "clip_direction"
# A trial keeping less than half of the source generator's diversity on the eval latents has (mostly)
# collapsed onto a few outputs, however well those outputs match the text.
DEFAULT_COLLAPSE_THRESHOLD = 0.5


def finite(value: object) -> float | None:
    """`value` as a float when it is a finite number, else None (metrics.jsonl may hold null or NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def is_better(metric: str, value: object, best: object) -> bool:
    """Whether `value` beats `best` for `metric`; a missing or non-finite value never wins, ties go to `value`."""
    value = finite(value)
    if value is None:
        return False
    best = finite(best)
    if best is None:
        return True
    return value <= best if metric in LOWER_IS_BETTER else value >= best


def mode(metric: str) -> str:
    """Ray Tune's name for the direction of `metric`: "min" or "max"."""
    return "min" if metric in LOWER_IS_BETTER else "max"


# An eval line marked so was taken while the trained numbers were not final (a sparse parametrization still
# pruning): it is reported but never the best step.
UNSETTLED = "unsettled"


def best_entry(history: Iterable[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The eval line with the best `metric` (ties: the later step), or None when no line has a finite value.

    The trainer keeps the weights of this step and the report shows it: both use this one rule.
    """
    best = None
    for entry in history:
        if entry.get(UNSETTLED):
            continue
        if is_better(metric, entry.get(metric), None if best is None else best.get(metric)):
            best = entry
    return best
