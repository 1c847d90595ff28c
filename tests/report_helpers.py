"""Results folders for the report tests: real tiny trainer runs, and hand-written run folders for edge cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from nada_sweep import run_files
from nada_sweep.run_files import RunFolder

HOSTILE_PROMPT = "<b>bold</b><script>window.pwned=1</script>"


def real_trial(root: Path, domain: str, trial: str, *, target: str, k: int, lr: float = 0.002,
               steps: int = 4) -> Path:
    """One real adaptation on the tiny built-in models, in the sweep layout trials/<domain>/<trial>/."""
    from nada_sweep.adapt.settings import AdaptConfig, ClipSpec
    from nada_sweep.adapt.run import run_adaptation

    config = AdaptConfig(
        generator="builtin:tiny",
        clip=[ClipSpec(name="builtin:tiny")],
        source="photo",
        target=target,
        steps=steps,
        eval_every=2,
        n_eval=4,
        n_samples=2,
        k=k,
        lr=lr,
        device="cpu",
    )
    out = root / "trials" / domain / trial
    labels = {"sweep": root.name, "domain": domain, "trial": trial, "demo": True, "params": {"k": k, "lr": lr}}
    run_adaptation(config, out, labels=labels)
    return out


def png(path: Path, width: int = 130, height: int = 66, color: tuple[int, int, int] = (90, 120, 200)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), color).save(path)


def fake_trial(
    root: Path,
    domain: str,
    trial: str,
    history: list[dict[str, Any]] | None = None,
    *,
    status: str | None = "ok",
    target: str = "sketch",
    k: int = 0,
    lr: float = 0.002,
    error: str | None = None,
    generator: bool = True,
    params: str | None = None,
    trainable: int | None = None,
) -> RunFolder:
    """A run folder written by hand: config.json, status.json, metrics.jsonl and sample PNGs per eval line.

    params: the parametrization, searched (a light one also gets a domain.pt beside its generator.pt).
    """
    folder = RunFolder(root / "trials" / domain / trial)
    folder.root.mkdir(parents=True, exist_ok=True)
    config = {"generator": "builtin:tiny", "source": "photo", "target": target, "k": k, "lr": lr, "steps": 10,
              "select_metric": "clip_direction", "params": params or "full"}
    searched = {"k": k, "lr": lr} | ({"params": params} if params else {})
    labels = {"sweep": root.name, "domain": domain, "trial": trial, "demo": True, "params": searched}
    record = {"config": config, "labels": labels, "random_weights": True, "label": None}
    if trainable is not None:
        record["trainable"] = trainable
    run_files.write_json(folder.path(run_files.CONFIG), record)
    if status is not None:
        folder.write_status(status=status, step=history[-1]["step"] if history else 0, error=error)
    history = history or []
    folder.write_history(history)
    if history:
        png(folder.samples / run_files.SOURCE_SAMPLES)
    for entry in history:
        png(folder.samples / run_files.sample_name(entry["step"]))
    if generator and history:
        folder.path(run_files.GENERATOR).write_bytes(b"weights of " + trial.encode())
        if params not in (None, "full"):
            folder.path(run_files.DOMAIN).write_bytes(b"offsets of " + trial.encode())
    return folder


def line(step: int, **metrics: float | None) -> dict[str, Any]:
    """An eval line with neutral defaults for the metrics not given."""
    entry: dict[str, Any] = {"step": step, "loss": 0.5, "clip_quality": 0.2, "clip_direction": 0.1,
                             "diversity": 0.3, "diversity_ratio": 0.9, "preservation": 0.8, "elapsed_s": step * 1.5}
    return entry | metrics
