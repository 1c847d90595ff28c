"""Sweep files on the built-in tiny models and a shared local Ray, for the sweep and fault tests."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

TINY_SWEEP = """\
name: tiny
generator: builtin:tiny
clip: [builtin:tiny]
catalog: catalog.yaml
train: {{steps: {steps}, eval_every: {eval_every}, n_eval: 4, n_samples: 2, auto_layer_batch: 2}}
"""


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray per test module (the runner uses a Ray it finds running, else starts its own)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def make_sweep(folder: Path, domains: str, *, steps: int = 4, eval_every: int = 2, search: str | None = "k: [0, 4]",
               extra: str = "") -> Path:
    """sweep.yaml + catalog.yaml in `folder`; `search` is one YAML line under `search:` (None: nothing searched)."""
    (folder / "catalog.yaml").write_text("source: photo\ndomains:\n" + textwrap.dedent(domains))
    text = TINY_SWEEP.format(steps=steps, eval_every=eval_every)
    if search is not None:
        text += f"search:\n  {search}\n"
    path = folder / "sweep.yaml"
    path.write_text(text + extra)
    return path


def statuses(root: Path) -> dict[str, dict]:
    """status.json of every trial under results folder `root`, keyed "domain/trial"."""
    return {
        f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text())
        for p in sorted((root / "trials").glob("*/*/status.json"))
    }


def status(folder: Path) -> str | None:
    try:
        return json.loads((folder / "status.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def wait_for(condition: Callable[[], bool], timeout: float = 240, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def write_undecodable_png(path: Path) -> None:
    """A PNG whose chunks and checksums are sound (so `validate` accepts it) but whose pixel data is not zlib:
    it fails only when a trial decodes it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)  # 8x8, 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"not zlib data" * 4)
                     + chunk(b"IEND", b""))


def tensorboard_events(folder: Path):
    """Every event file under `folder`, read with TensorBoard's own reader (all scalars, images and tensors)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events
