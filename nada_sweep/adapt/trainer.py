"""One StyleGAN-NADA adaptation run: twin generators, CLIP guidance, periodic evaluation, checkpoints.

No Ray and no HTML in here: the sweep calls `run_adaptation` per trial and the CLI calls it for `adapt`.

A run folder holds config.json, status.json, metrics.jsonl (one line per eval step), samples/ (a grid of
the fixed sample latents per eval step, plus source.png from the unadapted generator), generator.pt (the
weights at the best eval step, rosinality format) and, while the run is unfinished, state.pt (latest
weights, optimiser and RNG state) from which a rerun continues.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

import torch

from nada_sweep.adapt.layers import (
    default_trainable,
    layers_for_indices,
    pick_w_indices,
    set_trainable,
    trainable_indices,
)
from nada_sweep.adapt.mapper import LatentMapper, mapped_latents, save_mapper, train_mapper
from nada_sweep.adapt.losses import ClipGuidance, template_text_embedding
from nada_sweep.adapt.settings import REFERENCE_LR_SCALE, AdaptConfig
from nada_sweep.errors import UserError
from nada_sweep.images import save_grid
from nada_sweep.models.checkpoints import LoadedGenerator, load_generator, save_generator
from nada_sweep.models.stylegan2 import Generator
from nada_sweep.models.clip_models import ClipModel, check_prompt, load_clip
from nada_sweep.report.metrics import diversity, evaluate_embeddings, is_better
from nada_sweep import run_files
from nada_sweep.run_files import RunFolder
from nada_sweep.sampling import fixed_latents, render

RANDOM_WEIGHT_LABEL = "RANDOM-WEIGHT DEMO MODEL: images and numbers show the pipeline works, not real results"
EVAL_CHUNK = 8


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stops with status 'diverged'."""


@dataclass
class FrozenBatch:
    """The frozen side of one training step: latents and what the source generator makes of them."""

    styles: list[torch.Tensor]  # w per style vector (two when style mixing happens)
    source_embeddings: list[torch.Tensor]  # per guidance CLIP model
    source_images: torch.Tensor | None  # only kept when a loss needs pixels (the patch loss)


class FrozenSide(Protocol):
    def next_batch(self, batch_size: int) -> FrozenBatch: ...


@dataclass
class RunSummary:
    status: str
    out_dir: Path
    steps_done: int
    best_step: int | None
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    reused: bool = False  # True when the folder already held this finished run and nothing was trained


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device: {name!r} asked for, but this machine has no usable CUDA GPU (use cpu or auto)")
    return device


def sample_z(batch: int, style_dim: int, mixing: float, device: torch.device) -> list[torch.Tensor]:
    """One z per sample, or two (style mixing) with probability `mixing`, as the reference draws them."""
    count = 2 if mixing > 0 and torch.rand(()).item() < mixing else 1
    return [torch.randn(batch, style_dim, device=device) for _ in range(count)]


class LiveFrozenSide:
    """Draws fresh latents and renders the source side every step (the reference's order of work)."""

    def __init__(self, adaptation: Adaptation) -> None:
        self.adaptation = adaptation

    def next_batch(self, batch_size: int) -> FrozenBatch:
        a = self.adaptation
        with torch.no_grad():
            z = sample_z(batch_size, a.g_frozen.style_dim, a.config.mixing, a.device)
            styles = [a.g_frozen.style(s) for s in z]
            images = a.g_frozen(styles, input_is_latent=True, randomize_noise=a.randomize_noise)[0]
            with a.clip_precision():
                embeddings = [e.float() for e in a.guidance.embed_source(images)]
        return FrozenBatch(styles, embeddings, images if a.config.lambda_patch > 0 else None)


class Adaptation:
    """Twin generators and one training step; everything a run does between evaluations."""

    def __init__(self, config: AdaptConfig, loaded: LoadedGenerator, guidance: ClipGuidance, device: torch.device):
        self.config = config
        self.device = device
        self.guidance = guidance
        self.g_frozen = loaded.generator.to(device).eval().requires_grad_(False)
        self.g_train = copy.deepcopy(self.g_frozen).train()
        set_trainable(self.g_train, default_trainable(self.g_train))
        # Adam skips parameters without gradients, so one optimiser serves whichever layers are selected.
        scaled = REFERENCE_LR_SCALE
        self.optimiser = torch.optim.Adam(
            self.g_train.parameters(), lr=config.lr * scaled, betas=(0**scaled, 0.99**scaled)
        )
        self.randomize_noise = True  # tests turn this off to compare steps on identical noise
        self.chosen_indices: list[int] | None = None
        # Indices that drive only a ToRGB layer would select nothing trainable, so they are never chosen.
        self.candidates = trainable_indices(self.g_train, config.layer_map)
        if device.type == "cuda":
            # process-wide switches: each trial a worker runs sets them from its own config
            torch.backends.cuda.matmul.allow_tf32 = config.cuda_tf32
            torch.backends.cudnn.allow_tf32 = config.cuda_tf32
        if config.compile:
            self.g_train.compile()  # in place: parameter names, and so saved files, stay as they are

    def clip_precision(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for CLIP forward passes when cuda_bf16_clip asks for it on a CUDA device."""
        if self.device.type == "cuda" and self.config.cuda_bf16_clip:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def choose_layers(self, z: torch.Tensor | None = None) -> list[int]:
        """Adaptive layer selection: optimise W+ on the global CLIP loss, keep the k most-moved indices."""
        if self.config.k >= len(self.candidates) and not self.config.faithful:
            # The top k of k candidates are all of them, whatever the search finds: skip it.
            indices = list(self.candidates)
        else:
            if z is None:
                z = torch.randn(self.config.auto_layer_batch, self.g_frozen.style_dim, device=self.device)
            with torch.no_grad():
                w0 = self.g_frozen.style(z)
            indices = pick_w_indices(
                self.g_train,
                w0,
                self.guidance.global_text_loss,
                self.config.k,
                self.config.auto_layer_iters,
                weight_gradients=self.config.faithful,
                randomize_noise=self.randomize_noise,
                candidates=self.candidates,
            )
        set_trainable(self.g_train, layers_for_indices(self.g_train, indices, self.config.layer_map))
        self.chosen_indices = indices
        return indices

    def train_step(self, batch: FrozenBatch) -> float:
        images = self.g_train(batch.styles, input_is_latent=True, randomize_noise=self.randomize_noise)[0]
        with self.clip_precision():
            loss = self.guidance.loss(images, batch.source_embeddings, batch.source_images)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        return loss.item()

    def step(self, step_index: int, frozen: FrozenSide) -> float:
        if self.config.selects_layers and step_index % self.config.auto_layer_every == 0:
            self.choose_layers()
        return self.train_step(frozen.next_batch(self.config.batch))


class Evaluator:
    """Metrics and sample grids on fixed latents, shared by every trial of a sweep (same seed, same latents)."""

    def __init__(self, config: AdaptConfig, adaptation: Adaptation, eval_clip: ClipModel, latent_avg):
        self.config = config
        self.adaptation = adaptation
        self.clip = eval_clip
        g = adaptation.g_frozen
        self.w = fixed_latents(g, config.n_eval, config.sample_seed, config.sample_truncation, latent_avg)
        source_images = render(g, self.w, EVAL_CHUNK)
        self.source_embeddings = self.embed(source_images)
        self.source_grid = source_images[: config.n_samples]
        self.source_diversity = diversity(self.source_embeddings)
        self.direction = adaptation.guidance.eval_direction(eval_clip)
        self.target_text = template_text_embedding(eval_clip, config.target) if config.target else None

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.clip.encode_images(chunk) for chunk in images.split(EVAL_CHUNK)]).float()

    def evaluate(
        self, generator: Generator | None = None, mapper: LatentMapper | None = None
    ) -> tuple[dict[str, float | None], torch.Tensor]:
        """Metrics and sample images of `generator` (default: the one in training), through `mapper` if given."""
        generator = generator or self.adaptation.g_train
        images = render(generator, mapped_latents(mapper, generator, self.w), EVAL_CHUNK)
        metrics = evaluate_embeddings(
            self.source_embeddings, self.embed(images), self.direction, self.target_text, self.source_diversity
        )
        return metrics, images[: self.config.n_samples]


def check_config_against_models(config: AdaptConfig, n_latent: int) -> None:
    check_prompt(config.source, "source")
    if config.target:
        check_prompt(config.target, "target")
    if config.k > n_latent:
        raise UserError(f"k: {config.k} is larger than the generator's n_latent ({n_latent}); use 0..{n_latent}")
    if config.selects_layers and not config.target:
        raise UserError("k: adaptive layer selection needs a target text ('target'), not only 'target_images'")


def load_guidance(config: AdaptConfig, device: torch.device) -> ClipGuidance:
    models = [(load_clip(spec.name, device), spec.weight) for spec in config.clip]
    return ClipGuidance(
        models,
        source=config.source,
        target=config.target,
        lambda_direction=config.lambda_direction,
        lambda_global=config.lambda_global,
        lambda_manifold=config.lambda_manifold,
        lambda_patch=config.lambda_patch,
    )


def run_adaptation(
    config: AdaptConfig,
    out_dir: Path | str,
    *,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
    labels: dict[str, Any] | None = None,
    frozen_side: Callable[[Adaptation, int], FrozenSide] | None = None,
) -> RunSummary:
    """Adapt `config.generator` towards `config.target`, writing the run folder `out_dir`.

    A folder that holds this config's finished run is returned as is; one that holds its unfinished run is
    continued from state.pt. A folder holding a different config is refused (UserError).
    `on_eval(metrics)` is called after every evaluation; `frozen_side(adaptation, start_step)` may supply the
    frozen side from outside, from the step the run starts (or resumes) at (the default renders it every
    step; the sweep passes nada_sweep.adapt.bank's shared bank).
    """
    folder = RunFolder(out_dir)
    config_record = {"config": config.model_dump(mode="json"), "labels": labels or {}}
    _claim_folder(folder, config_record)
    if folder.is_finished():
        return _summary_from_disk(folder, reused=True)
    try:
        return _train(config, folder, config_record, on_eval, frozen_side)
    except TrainingDiverged:
        raise
    except BaseException as error:  # recorded for the report, then passed on unchanged
        # Ray Tune stops a trial by raising SystemExit from inside its report call.
        status = "interrupted" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "failed"
        previous = folder.status() or {}
        folder.write_status(status=status, step=previous.get("step", 0), error=f"{type(error).__name__}: {error}")
        raise


def _train(
    config: AdaptConfig,
    folder: RunFolder,
    config_record: dict[str, Any],
    on_eval: Callable[[dict[str, Any]], None] | None,
    frozen_side: Callable[[Adaptation, int], FrozenSide] | None,
) -> RunSummary:
    device = resolve_device(config.device)
    loaded = load_generator(config.generator, device)
    check_config_against_models(config, loaded.generator.n_latent)
    torch.manual_seed(config.seed)
    guidance = load_guidance(config, device)
    adaptation = Adaptation(config, loaded, guidance, device)
    if config.target_images:
        guidance.use_image_target(config.target_images, _image_target_samples(adaptation))
    eval_clip = load_clip(config.eval_clip_name, device)
    evaluator = Evaluator(config, adaptation, eval_clip, loaded.latent_avg)

    random_weights = bool(loaded.metadata.get("random_weights")) or any(m.random_weights for m, _ in guidance.models)
    label = RANDOM_WEIGHT_LABEL if random_weights or eval_clip.random_weights else None
    config_record |= {"generator": loaded.spec.to_dict(), "random_weights": label is not None, "label": label}
    run_files.write_json(folder.path(run_files.CONFIG), config_record)
    save_grid(evaluator.source_grid, folder.samples / run_files.SOURCE_SAMPLES, label)

    progress = _TrainingProgress.restore(folder, adaptation, config.select_metric)
    frozen = frozen_side(adaptation, progress.step) if frozen_side else LiveFrozenSide(adaptation)
    folder.write_status(status="running", step=progress.step, error=None)
    started = time.perf_counter()
    for step in range(progress.step, config.steps):
        loss = adaptation.step(step, frozen)
        if not math.isfinite(loss):
            _diverged(folder, config, step, f"the training loss became {loss} at step {step + 1}")
        progress.losses.append(loss)
        done = step + 1
        if done % config.eval_every == 0 or done == config.steps:
            metrics, samples = evaluator.evaluate()
            broken = [name for name, value in metrics.items() if value is not None and not math.isfinite(value)]
            if broken:
                # Weights that overflow on the eval latents; checked before anything is written, so the last
                # checkpoint, metrics line and generator.pt all stay those of the last good evaluation.
                _diverged(folder, config, step, f"the evaluation at step {done} gave non-finite "
                          f"{', '.join(broken)} (the adapted generator's images overflow)")
            entry = progress.record(done, metrics, time.perf_counter() - started)
            save_grid(samples, folder.samples / run_files.sample_name(done), label)
            if progress.best_step == done:
                _save_weights(folder, adaptation, loaded, config, done, label)
            progress.checkpoint(folder, adaptation)
            folder.write_status(status="running", step=done, error=None)
            if on_eval:
                on_eval(entry)
    if config.mapper:
        _mapper_stage(config, folder, adaptation, evaluator, label)
    folder.path(run_files.STATE).unlink(missing_ok=True)
    folder.write_status(status=run_files.FINISHED, step=config.steps, error=None, best_step=progress.best_step)
    return _summary_from_disk(folder)


def _diverged(folder: RunFolder, config: AdaptConfig, step: int, what: str) -> NoReturn:
    error = f"{what}; the weights diverged (try a lower lr than {config.lr:g})"
    folder.write_status(status="diverged", step=step, error=error)
    raise TrainingDiverged(f"{folder.root}: {error}")


def _mapper_stage(
    config: AdaptConfig, folder: RunFolder, adaptation: Adaptation, evaluator: Evaluator, label: str | None
) -> None:
    """Train the latent mapper on the best step's weights; its metrics go to mapper_metrics.json."""
    adapted = copy.deepcopy(adaptation.g_train).eval()
    best = torch.load(folder.path(run_files.GENERATOR), map_location=adaptation.device, weights_only=True)
    adapted.load_state_dict(best["g_ema"])
    mapper, clip_losses = train_mapper(adapted, config.mapper, adaptation.guidance.global_text_loss, seed=config.seed)
    save_mapper(folder.path(run_files.MAPPER), mapper)
    metrics, samples = evaluator.evaluate(adapted, mapper)
    record = {f"mapper_{name}": value for name, value in metrics.items()}
    record |= {"mapper_clip_loss_first": clip_losses[0], "mapper_clip_loss_last": clip_losses[-1]}
    run_files.write_json(folder.path(run_files.MAPPER_METRICS), record)
    save_grid(samples, folder.samples / run_files.MAPPER_SAMPLES, label)


def _image_target_samples(adaptation: Adaptation) -> torch.Tensor:
    with torch.no_grad():
        z = torch.randn(16, adaptation.g_frozen.style_dim, device=adaptation.device)
        return adaptation.g_frozen([z])[0]


def _save_weights(
    folder: RunFolder,
    adaptation: Adaptation,
    loaded: LoadedGenerator,
    config: AdaptConfig,
    step: int,
    label: str | None,
) -> None:
    metadata = {
        "source": config.source,
        "target": config.target or config.target_images,
        "step": step,
        "random_weights": label is not None,
        "adapted_from": config.generator,
    }
    save_generator(folder.path(run_files.GENERATOR), adaptation.g_train, loaded.latent_avg, metadata)


def _claim_folder(folder: RunFolder, config_record: dict[str, Any]) -> None:
    path = folder.path(run_files.CONFIG)
    if path.exists():
        existing = run_files.read_json(path)
        # A run that failed before its first eval holds nothing worth keeping; its folder may be reused.
        holds_work = folder.history() or folder.path(run_files.STATE).exists() or folder.is_finished()
        if existing.get("config") != config_record["config"] and holds_work:
            raise UserError(
                f"{folder.root}: holds a run with a different configuration; choose another output folder "
                "or start over explicitly (adapt --overwrite, run --fresh)"
            )
    run_files.write_json(path, config_record)


@dataclass
class _TrainingProgress:
    metric: str
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    best_step: int | None = None
    best_value: float | None = None
    elapsed_before: float = 0.0

    @classmethod
    def restore(cls, folder: RunFolder, adaptation: Adaptation, metric: str) -> _TrainingProgress:
        progress = cls(metric)
        state_path = folder.path(run_files.STATE)
        if not state_path.exists():
            folder.write_history([])
            return progress
        state = torch.load(state_path, map_location=adaptation.device, weights_only=True)
        adaptation.g_train.load_state_dict(state["g_train"])
        adaptation.optimiser.load_state_dict(state["optimiser"])
        torch.set_rng_state(state["rng"].cpu())
        if adaptation.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), adaptation.device)
        progress.step = state["step"]
        progress.history = [entry for entry in folder.history() if entry["step"] <= progress.step]
        progress.elapsed_before = progress.history[-1]["elapsed_s"] if progress.history else 0.0
        for entry in progress.history:
            if is_better(metric, entry.get(metric), progress.best_value):
                progress.best_step, progress.best_value = entry["step"], entry[metric]
        folder.write_history(progress.history)
        return progress

    def record(self, step: int, metrics: dict[str, float | None], elapsed: float) -> dict[str, Any]:
        mean_loss = sum(self.losses) / len(self.losses) if self.losses else None
        entry = {"step": step, "loss": mean_loss, **metrics, "elapsed_s": round(self.elapsed_before + elapsed, 3)}
        self.losses.clear()
        self.history.append(entry)
        if is_better(self.metric, entry.get(self.metric), self.best_value):
            self.best_step, self.best_value = step, entry[self.metric]
        entry["best_step"] = self.best_step
        return entry

    def checkpoint(self, folder: RunFolder, adaptation: Adaptation) -> None:
        state = {
            "g_train": adaptation.g_train.state_dict(),
            "optimiser": adaptation.optimiser.state_dict(),
            "rng": torch.get_rng_state(),
            "step": self.history[-1]["step"],
        }
        if adaptation.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(adaptation.device)
        folder.write_history(self.history)
        run_files.atomic_write(folder.path(run_files.STATE), lambda tmp: torch.save(state, tmp))


def _summary_from_disk(folder: RunFolder, reused: bool = False) -> RunSummary:
    status = folder.status() or {}
    history = folder.history()
    best_step = status.get("best_step")
    best = next((entry for entry in history if entry["step"] == best_step), {})
    return RunSummary(
        status=status.get("status", "unknown"),
        out_dir=folder.root,
        steps_done=status.get("step", 0),
        best_step=best_step,
        best_metrics=best,
        history=history,
        reused=reused,
    )

