"""One adaptation run in its folder: the step loop, evaluation schedule, checkpoints and resume.

No Ray and no HTML in here: the sweep calls `run_adaptation` per trial and the CLI calls it for `adapt`.

A run folder holds config.json, status.json, metrics.jsonl (one line per eval step), samples/ (a grid of
the fixed sample latents per eval step, plus source.png from the unadapted generator), generator.pt (the
weights at the best eval step, rosinality format) and, while the run is unfinished, state.pt (latest
weights, optimiser and RNG state) from which a rerun continues.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch

from nada_sweep import run_files
from nada_sweep.adapt.evaluate import EvalSource, Evaluator, eval_source_key
from nada_sweep.adapt.mapper import save_mapper, train_mapper
from nada_sweep.adapt.domains import base_identity, domain_of, save_domain
from nada_sweep.adapt.nada import Adaptation, FrozenBatch, FrozenSide, LiveFrozenSide, load_guidance
from nada_sweep.adapt.params import Full
from nada_sweep.adapt.settings import AdaptConfig, changed_settings, k_problem, target_text_problem
from nada_sweep.devices import peak_memory_metrics, resolve_device, reset_peak_memory, reuse_freed_memory
from nada_sweep.errors import UserError
from nada_sweep.images import save_grid
from nada_sweep.metric_rules import UNSETTLED, best_entry
from nada_sweep.models.checkpoints import LoadedGenerator, is_random_weight, load_generator, save_generator
from nada_sweep.models.clip_models import check_prompt, load_clip
from nada_sweep.run_files import RANDOM_WEIGHT_LABEL, RunFolder, Status


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stops with status 'diverged'."""


class StopEarly(Exception):
    """Raised by an `on_eval` callback to end the run there, finished for good with status 'stopped' (early
    stopping: the sweep's scheduler found it behind); its message is recorded as the reason."""


@dataclass
class RunSummary:
    status: Status
    out_dir: Path
    steps_done: int
    best_step: int | None
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    reused: bool = False  # True when the folder already held this finished run and nothing was trained


def check_config_against_models(config: AdaptConfig, n_latent: int) -> None:
    check_prompt(config.source, "source")
    if config.target:
        check_prompt(config.target, "target")
    problem = k_problem(config.k, n_latent, config.generator)
    if problem:
        raise UserError(f"k: {problem} (got {config.k})")
    problem = target_text_problem(config.selects_layers, config.lambda_global, config.lambda_manifold, config.target)
    if problem:
        raise UserError(f"target_images: {problem}")


@dataclass
class StepRequest:
    """What a run asks of whoever drives it: one optimiser step of `adaptation` on `batch`."""

    adaptation: Adaptation
    batch: FrozenBatch


@dataclass
class LayerRequest:
    """What a run with adaptive layer selection asks first on the steps that choose: `adaptation`'s layers."""

    adaptation: Adaptation


# A run as a generator: it yields each training step (and each choice of layers) for its driver to take and is
# sent back the step's loss (None for a choice); alone the driver answers as answer_alone does, a pack
# (nada_sweep.adapt.pack) batches the steps and the layer searches of its members.
RunSteps = Generator[StepRequest | LayerRequest, torch.Tensor | None, RunSummary]


def answer_alone(request: StepRequest | LayerRequest) -> torch.Tensor | None:
    """Take a run's request by itself: its layer choice, or its optimiser step (the loss)."""
    if isinstance(request, LayerRequest):
        request.adaptation.choose_layers()
        return None
    return request.adaptation.train_step(request.batch)


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
    steps = run_steps(config, out_dir, on_eval=on_eval, labels=labels, frozen_side=frozen_side)
    try:
        request = next(steps)
        while True:
            try:
                answer = answer_alone(request)
            except BaseException as error:
                request = steps.throw(error)  # the run records it as its own failure, then raises it again
            else:
                request = steps.send(answer)
    except StopIteration as finished:
        return finished.value


def run_steps(
    config: AdaptConfig,
    out_dir: Path | str,
    *,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
    labels: dict[str, Any] | None = None,
    frozen_side: Callable[[Adaptation, int], FrozenSide] | None = None,
    loaded: LoadedGenerator | None = None,
    eval_sources: dict[tuple, EvalSource] | None = None,
) -> RunSteps:
    """run_adaptation as a generator of its training steps (see RunSteps); `loaded`: the generator to adapt,
    already loaded (a pack shares one among its members), and `eval_sources` the EvalSources of `loaded` by
    eval_source_key, shared the same way (this run adds its own). An error thrown in at a step is recorded as
    the run's."""
    folder = RunFolder(out_dir)
    config_record = {"config": config.model_dump(mode="json"), "labels": labels or {}}
    _claim_folder(folder, config_record)
    if folder.is_finished():
        return _summary_from_disk(folder, reused=True)
    try:
        return (yield from _train(config, folder, config_record, on_eval, frozen_side, loaded, eval_sources))
    except TrainingDiverged:
        raise
    except BaseException as error:  # recorded for the report, then passed on unchanged
        # Ray Tune stops a trial by raising SystemExit from inside its report call; a pack closes the runs
        # it stops (GeneratorExit).
        stopped = isinstance(error, (KeyboardInterrupt, SystemExit, GeneratorExit))
        previous = folder.status() or {}
        folder.write_status(status=Status.INTERRUPTED if stopped else Status.FAILED, step=previous.get("step", 0),
                            error=f"{type(error).__name__}: {error}")
        raise


def _train(
    config: AdaptConfig,
    folder: RunFolder,
    config_record: dict[str, Any],
    on_eval: Callable[[dict[str, Any]], None] | None,
    frozen_side: Callable[[Adaptation, int], FrozenSide] | None,
    loaded: LoadedGenerator | None,
    eval_sources: dict[tuple, EvalSource] | None,
) -> RunSteps:
    device = resolve_device(config.device)
    if device.type == "cpu":
        reuse_freed_memory()
    loaded = loaded or load_generator(config.generator, device)
    check_config_against_models(config, loaded.generator.n_latent)
    torch.manual_seed(config.seed)
    guidance = load_guidance(config, device)
    adaptation = Adaptation(config, loaded, guidance, device)
    if config.target_images:
        guidance.use_image_target(config.target_images, _image_target_samples(adaptation))
    eval_clip = load_clip(config.eval_clip_name, device)
    sources = {} if eval_sources is None else eval_sources
    evaluator = Evaluator(config, adaptation, eval_clip, loaded.latent_avg, sources.get(eval_source_key(config)))
    sources[eval_source_key(config)] = evaluator.source

    random_weights = is_random_weight(loaded) or any(m.random_weights for m, _ in guidance.models)
    label = RANDOM_WEIGHT_LABEL if random_weights or eval_clip.random_weights else None
    config_record |= {"generator": loaded.spec.to_dict(), "random_weights": label is not None, "label": label,
                      "trainable": adaptation.g_train.num_trainable()}
    run_files.write_json(folder.path(run_files.CONFIG), config_record)
    save_grid(evaluator.source_grid, folder.samples / run_files.SOURCE_SAMPLES, label)

    progress = _TrainingProgress.restore(folder, adaptation, config.select_metric)
    frozen = frozen_side(adaptation, progress.step) if frozen_side else LiveFrozenSide(adaptation)
    folder.write_status(status=Status.RUNNING, step=progress.step, error=None)
    reset_peak_memory(device)
    started = time.perf_counter()
    for step in range(progress.step, config.steps):
        # The loss stays on the device until the evaluation: reading it every step would make the CPU wait
        # for the GPU each time instead of queueing the next step's work.
        if adaptation.chooses_layers_at(step):
            yield LayerRequest(adaptation)
        progress.losses.append((yield StepRequest(adaptation, frozen.next_batch(config.batch))))
        done = step + 1
        if done % config.eval_every == 0 or done == config.steps:
            losses = progress.take_losses()
            for index, loss in enumerate(losses, start=done - len(losses)):
                if not math.isfinite(loss):
                    _diverged(folder, config, index, f"the training loss became {loss} at step {index + 1}")
            metrics, samples = evaluator.evaluate()
            broken = [name for name, value in metrics.items() if value is not None and not math.isfinite(value)]
            if broken:
                # Weights that overflow on the eval latents; checked before anything is written, so the last
                # checkpoint, metrics line and generator.pt all stay those of the last good evaluation.
                _diverged(folder, config, step, f"the evaluation at step {done} gave non-finite "
                          f"{', '.join(broken)} (the adapted generator's images overflow)")
            entry = progress.record(done, losses, metrics | peak_memory_metrics(device),
                                    time.perf_counter() - started)
            save_grid(samples, folder.samples / run_files.sample_name(done), label)
            if progress.best_step == done:
                _save_weights(folder, adaptation, loaded, config, done, label)
            progress.checkpoint(folder, adaptation)
            folder.write_status(status=Status.RUNNING, step=done, error=None)
            if on_eval:
                try:
                    on_eval(entry)
                except StopEarly as stop:
                    folder.write_status(status=Status.STOPPED, step=done, error=None, best_step=progress.best_step,
                                        reason=str(stop))
                    return _summary_from_disk(folder)
    if config.mapper:
        _mapper_stage(config, folder, adaptation, evaluator, label)
    folder.path(run_files.STATE).unlink(missing_ok=True)
    folder.write_status(status=Status.OK, step=config.steps, error=None, best_step=progress.best_step)
    return _summary_from_disk(folder)


def _diverged(folder: RunFolder, config: AdaptConfig, step: int, what: str) -> NoReturn:
    error = f"{what}; the weights diverged (try a lower lr than {config.lr:g})"
    folder.write_status(status=Status.DIVERGED, step=step, error=error)
    raise TrainingDiverged(f"{folder.root}: {error}")


def _mapper_stage(
    config: AdaptConfig, folder: RunFolder, adaptation: Adaptation, evaluator: Evaluator, label: str | None
) -> None:
    """Train the latent mapper on the best step's weights; its metrics go to mapper_metrics.json."""
    adapted = adaptation.g_train.fold()
    best = torch.load(folder.path(run_files.GENERATOR), map_location=adaptation.device, weights_only=True)
    adapted.load_state_dict(best["g_ema"])
    mapper, clip_losses = train_mapper(adapted, config.mapper, adaptation.guidance.mapper_loss, seed=config.seed)
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
    params = adaptation.g_train
    metadata = {
        "source": config.source,
        "target": config.target or config.target_images,
        "step": step,
        "random_weights": label is not None,
        "adapted_from": config.generator,
        "params": config.params,
        "trainable": params.num_trainable(),
    }
    # generator.pt is always a plain rosinality generator, whatever trained; light modes add their offsets.
    save_generator(folder.path(run_files.GENERATOR), params.fold(), loaded.latent_avg, metadata)
    if config.params != Full.name:
        save_domain(folder.path(run_files.DOMAIN), domain_of(params, base_identity(config.generator), metadata))


def _claim_folder(folder: RunFolder, config_record: dict[str, Any]) -> None:
    path = folder.path(run_files.CONFIG)
    if path.exists():
        existing = run_files.read_json(path)
        # A run that failed before its first eval holds nothing worth keeping; its folder may be reused.
        holds_work = folder.history() or folder.path(run_files.STATE).exists() or folder.is_finished()
        if changed_settings(existing.get("config") or {}, config_record["config"]) and holds_work:
            raise UserError(
                f"{folder.root}: holds a run with a different configuration; choose another output folder "
                "or start over explicitly (adapt --overwrite, run --fresh)"
            )
    run_files.write_json(path, config_record)


@dataclass
class _TrainingProgress:
    metric: str
    settled_step: int = 0  # evaluations before it are not kept as the best step (a sparse mode still pruning)
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    losses: list[torch.Tensor] = field(default_factory=list)  # since the last evaluation, on the device
    elapsed_before: float = 0.0

    @classmethod
    def restore(cls, folder: RunFolder, adaptation: Adaptation, metric: str) -> _TrainingProgress:
        progress = cls(metric, getattr(adaptation.g_train, "settled_step", 0))
        state_path = folder.path(run_files.STATE)
        if not state_path.exists():
            folder.write_history([])
            return progress
        # On the CPU: load_state_dict moves weights and Adam's moments to their parameters' devices but keeps
        # Adam's step counters where they were loaded, and counters on a GPU make every optimiser step wait.
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if "params" in state:
            adaptation.g_train.load_state_dict(state["params"])
        else:  # written before parametrizations existed: the fine-tuned generator's weights
            adaptation.g_train.generator.load_state_dict(state["g_train"])
        adaptation.steps_done = state["step"]
        adaptation.optimiser.load_state_dict(state["optimiser"])
        torch.set_rng_state(state["rng"])
        if adaptation.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], adaptation.device)
        progress.step = state["step"]
        progress.history = [entry for entry in folder.history() if entry["step"] <= progress.step]
        progress.elapsed_before = progress.history[-1]["elapsed_s"] if progress.history else 0.0
        folder.write_history(progress.history)
        return progress

    def take_losses(self) -> list[float]:
        """The losses of the steps since the last evaluation, read from the device at once (one wait)."""
        values = torch.stack(self.losses).float().tolist() if self.losses else []
        self.losses.clear()
        return values

    def record(self, step: int, losses: list[float], metrics: dict[str, float | None], elapsed: float
               ) -> dict[str, Any]:
        mean_loss = sum(losses) / len(losses) if losses else None
        entry = {"step": step, "loss": mean_loss, **metrics, "elapsed_s": round(self.elapsed_before + elapsed, 3)}
        if step < self.settled_step:
            entry[UNSETTLED] = True
        self.history.append(entry)
        entry["best_step"] = self.best_step
        return entry

    @property
    def best_step(self) -> int | None:
        best = best_entry(self.history, self.metric)
        return best["step"] if best else None

    def checkpoint(self, folder: RunFolder, adaptation: Adaptation) -> None:
        state = {
            "params": adaptation.g_train.state_dict(),
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
        status=folder.state(),
        out_dir=folder.root,
        steps_done=status.get("step", 0),
        best_step=best_step,
        best_metrics=best,
        history=history,
        reused=reused,
    )

