"""Packs: several runs trained together, one batched step for all of them.

Every member is a whole run (`nada_sweep.adapt.run.run_steps`): its own folder, config, evaluation,
metrics.jsonl, samples, generator.pt/domain.pt, status, state.pt and resume, its own optimiser and layer
selection. The pack only takes their training steps: one forward of all members' samples through the one
frozen generator they share (light members: member i's offsets on its own samples, `render_packed`; full
members: each one's own weights as one grouped convolution per layer, `render_full_packed`), one CLIP forward per
guiding model for all images, and one backward of the members' summed losses (their numbers are disjoint,
so each gets exactly its own gradient). Light members' layer choices (LayerRequest) are taken the same way: one
batched W+ search of all members that search with the same number of iterations. Members also share their
evaluation's source images and embeddings (run_steps' eval_sources).

Each member keeps its own torch RNG stream: the pack swaps the member's state in whenever it runs the member's
code or draws the member's noise maps, so a member draws exactly the latents and noise it draws alone and its
checkpoint stores its own stream. A member that fails or diverges leaves the pack with its own status; the
others go on.

Full and light members pack apart (pack_key). Full members with adaptive layer selection share the pack's
models and process but take every step and search alone (_steps_alone). Refused in packs: the live frozen side
with style mixing (the generator draws the crossover from Python's RNG; the sweep's frozen bank gives each member
its W+).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nada_sweep.adapt.nada import Adaptation, FrozenBatch, FrozenSide
from nada_sweep.adapt.pack_render import render_full_packed
from nada_sweep.adapt.params import Full, render_packed
from nada_sweep.adapt.layers import most_moved, w_plus_movement
from nada_sweep.adapt.run import LayerRequest, RunSteps, RunSummary, StepRequest, answer_alone, run_steps
from nada_sweep.adapt.settings import AdaptConfig
from nada_sweep.devices import resolve_device
from nada_sweep.errors import UserError
from nada_sweep.models.checkpoints import load_generator


@dataclass
class PackMember:
    """One run of a pack: what run_adaptation takes for it."""

    config: AdaptConfig
    out_dir: Path | str
    labels: dict[str, Any] | None = None
    on_eval: Callable[[dict[str, Any]], None] | None = None
    frozen_side: Callable[[Adaptation, int], FrozenSide] | None = None
    on_end: Callable[[RunSummary | BaseException], None] | None = None  # told as the member leaves the pack


def pack_key(config: AdaptConfig) -> tuple:
    """What members of one pack must share: one generator, one set of guiding CLIP models in order, one device
    and one CLIP precision; `full` members also one batch size (their convolutions are grouped per member),
    and they pack apart from light ones."""
    key = (config.generator, tuple(spec.name for spec in config.clip), config.device, config.cuda_bf16_clip,
           config.cuda_tf32)
    return key + (Full.name, config.batch) if config.params == Full.name else key


def pack_problem(configs: Sequence[AdaptConfig]) -> str | None:
    """Why these runs cannot form one pack, or None."""
    if len({config.params == Full.name for config in configs}) > 1:
        return f"{Full.name!r} runs train their own convolution weights and pack apart from light ones"
    if len({pack_key(config) for config in configs}) > 1:
        return ("the members of a pack need one generator, the same guiding CLIP models, device and precision "
                f"(and {Full.name!r} members one batch size)")
    return None


@dataclass
class _RngStream:
    """A member's torch RNG state, swapped in while its code or its draws run."""

    device: torch.device
    cpu: torch.Tensor = field(default_factory=torch.get_rng_state)
    cuda: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.device.type == "cuda":
            self.cuda = torch.cuda.get_rng_state(self.device)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        outer_cpu = torch.get_rng_state()
        outer_cuda = torch.cuda.get_rng_state(self.device) if self.cuda is not None else None
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)
        try:
            yield
        finally:
            self.cpu = torch.get_rng_state()
            torch.set_rng_state(outer_cpu)
            if self.cuda is not None:
                self.cuda = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(outer_cuda, self.device)


@dataclass
class _Live:
    index: int
    steps: RunSteps
    rng: _RngStream
    request: StepRequest | LayerRequest | None = None


def train_pack(members: Sequence[PackMember]) -> list[RunSummary | BaseException]:
    """Train `members` as one pack; per member its RunSummary, or the exception that ended it (each member's
    folder records its own status). KeyboardInterrupt/SystemExit stop every member (each recorded as
    interrupted, resumable) and are raised again. UserError if the members cannot share a pack."""
    problem = pack_problem([member.config for member in members])
    if problem:
        raise UserError(f"pack: {problem}")
    device = resolve_device(members[0].config.device)
    loaded = load_generator(members[0].config.generator, device)  # one frozen generator for every member
    eval_sources: dict = {}  # the members' evaluations share the unadapted generator's images of the fixed latents
    results: list[RunSummary | BaseException | None] = [None] * len(members)
    live = [_Live(index, run_steps(member.config, member.out_dir, on_eval=member.on_eval, labels=member.labels,
                                   frozen_side=member.frozen_side, loaded=loaded, eval_sources=eval_sources),
                  _RngStream(device))
            for index, member in enumerate(members)]
    try:
        # What each member is sent next (absent: it waits). Members choosing layers are answered first, all at
        # once; those already asking for their step wait for them, and then every member steps together.
        sent: dict[int, torch.Tensor | BaseException | None] = {run.index: None for run in live}
        while live:
            for run in live:
                if run.index in sent:
                    _advance(run, sent.pop(run.index), results)
                    if run.request is None and members[run.index].on_end:
                        members[run.index].on_end(results[run.index])
            live = [run for run in live if run.request is not None]
            choosing = [run for run in live if isinstance(run.request, LayerRequest)]
            answered = choosing or live
            try:
                answers = _choose_layers(choosing) if choosing else _pack_step(live)
            except Exception as error:  # the pack's own work failed: every member records it as its own
                answers = [error] * len(answered)
            sent = {run.index: answer for run, answer in zip(answered, answers, strict=True)}
    except BaseException:  # interrupted (KeyboardInterrupt, or Tune stopping the trial): every member resumable
        for run in live:
            with run.rng.active():
                run.steps.close()  # the member records itself as interrupted
        raise
    return results  # type: ignore[return-value]  # every member has ended, so none is None


def _advance(run: _Live, sent: torch.Tensor | BaseException | None, results: list) -> None:
    """Run the member's own code up to its next step request (or its end), under its own RNG stream."""
    try:
        with run.rng.active():
            if isinstance(sent, BaseException):
                run.request = run.steps.throw(sent)
            elif sent is None:
                run.request = next(run.steps)
            else:
                run.request = run.steps.send(sent)
    except StopIteration as finished:
        run.request, results[run.index] = None, finished.value
    except (KeyboardInterrupt, SystemExit):
        run.request = None
        raise
    except BaseException as error:  # a failed or diverged member leaves the pack; its folder says why
        run.request, results[run.index] = None, error


def _w_plus(batch: FrozenBatch, n_latent: int) -> torch.Tensor:
    if len(batch.styles) != 1:
        raise ValueError("a pack member's frozen side must give one W+ per step (the frozen bank, or mixing 0)")
    w = batch.styles[0]
    return w if w.ndim == 3 else w.unsqueeze(1).repeat(1, n_latent, 1)


def _choose_layers(live: Sequence[_Live]) -> list[BaseException | None]:
    """Every member's choice of layers (None, or the error that ended its choice); the light members' W+
    searches as one batched search, like their steps."""
    outcomes: dict[int, BaseException | None] = {}
    together = []
    for position, run in enumerate(live):
        adaptation = run.request.adaptation
        if adaptation.searches_layers and not adaptation.config.faithful and not _steps_alone(adaptation):
            together.append(position)
            continue
        try:  # nothing to search (k covers every candidate), a faithful search (it also computes weight
            # gradients, as the reference does), or a full member's (it takes every step alone)
            with run.rng.active():
                answer_alone(run.request)
            outcomes[position] = None
        except Exception as error:
            outcomes[position] = error
    by_iterations: dict[int, list[int]] = {}
    for position in together:
        by_iterations.setdefault(live[position].request.adaptation.config.auto_layer_iters, []).append(position)
    for group in by_iterations.values():
        _batched_search([live[position] for position in group])
        outcomes |= dict.fromkeys(group)
    return [outcomes[position] for position in range(len(live))]


def _batched_search(live: Sequence[_Live]) -> None:
    """The W+ searches of light members at once: each member's latents, noise and loss as pick_w_indices
    draws and computes them alone, one forward and one backward for all (their rows of W+ are disjoint)."""
    adaptations = [run.request.adaptation for run in live]
    generator = adaptations[0].g_frozen
    iterations = adaptations[0].config.auto_layer_iters  # the same for every member of one batched search
    starts, noise_maps = [], []
    for run, adaptation in zip(live, adaptations, strict=True):
        with run.rng.active():  # in the order the member draws them alone: its latents, then each pass's noise
            w0 = adaptation.search_start()
            starts.append(w0.detach().unsqueeze(1).repeat(1, generator.n_latent, 1))
            noise_maps.append([_noise(generator, adaptation, len(w0)) for _ in range(iterations)])
    sizes = [len(start) for start in starts]
    members = [adaptation.g_train for adaptation in adaptations]

    def loss_of(w_plus: torch.Tensor, iteration: int) -> torch.Tensor:
        noise = [torch.cat(maps) for maps in zip(*(member[iteration] for member in noise_maps), strict=True)]
        images = render_packed(members, sizes, [w_plus], input_is_latent=True, noise=noise)[0]
        losses = [adaptation.selection_loss(member_images, member_embeddings)
                  for adaptation, member_images, member_embeddings
                  in zip(adaptations, images.split(sizes), _embeddings(adaptations[0], images, sizes))]
        return torch.stack(losses).sum()

    trained = [p for member in members for p in member.parameters()]
    movements = w_plus_movement(trained, torch.cat(starts), loss_of, iterations).split(sizes)
    for adaptation, movement in zip(adaptations, movements, strict=True):
        adaptation.use_layers(most_moved(movement.mean(dim=0), adaptation.config.k, adaptation.candidates))


def _embeddings(adaptation: Adaptation, images: torch.Tensor, sizes: Sequence[int]) -> list[list[torch.Tensor]]:
    """Per member (`sizes[i]` consecutive images each), its images' embeddings by every guiding CLIP model of the
    pack: one forward per model for all members, at the members' shared CLIP precision."""
    with adaptation.clip_precision():
        per_model = [clip.encode_images(images).split(list(sizes)) for clip, _ in adaptation.guidance.models]
    return [list(member) for member in zip(*per_model, strict=True)]


def _noise(generator, adaptation: Adaptation, size: int) -> list[torch.Tensor]:
    """The noise maps of one pass of `size` samples: drawn as the generator draws them for this member alone
    (from the RNG stream active), or its fixed maps."""
    if adaptation.randomize_noise:
        return generator.make_noise(size)
    return [getattr(generator.noises, f"noise_{i}").expand(size, -1, -1, -1) for i in range(generator.num_layers)]


def _pack_step(live: Sequence[_Live]) -> list[torch.Tensor]:
    """One optimiser step of every live member; each member's loss, as its own train_step would return it.

    A member's step is taken alone when it is its first (until then its images may equal the source images,
    which the loss detects by exact comparison, and nudges) or the first optimiser step of one of its
    parameters (a layer chosen for the first time): Adam's first step on a parameter is lr * g / (|g| + eps),
    the sign of each gradient element, so the float rounding by which a batched pass differs from a single one
    would flip near-zero elements into differences of 2 lr. Taken alone, that step is the alone run's own
    arithmetic. Measured over 20 steps of stylespace with k = 2: drift from the alone run 3e-5 instead of 9e-4.
    Full members with layer selection take every step alone (_steps_alone).
    """
    losses: dict[int, torch.Tensor] = {}
    for position, run in enumerate(live):
        adaptation = run.request.adaptation
        if adaptation.untrained or _steps_alone(adaptation) or _first_step_of_a_parameter(adaptation):
            with run.rng.active():
                losses[position] = adaptation.train_step(run.request.batch)
    together = [position for position in range(len(live)) if position not in losses]
    if together:
        batched = _batched_step([live[position] for position in together])
        losses |= dict(zip(together, batched, strict=True))
    return [losses[position] for position in range(len(live))]


def _steps_alone(adaptation: Adaptation) -> bool:
    """Whether every step of this member runs alone: full members with adaptive layer selection.

    Measured (tiny models, CPU): batched, such a member leaves its alone run by 1e-2..8e-1 in its weights within
    24 steps, even with each layer's first step alone. Full trains with Adam at beta1 = 0: each step is
    g / RMS(g) per element, so an element whose gradient is near zero against its own past magnitude takes a
    step of O(lr) set by float rounding, and a batched pass rounds differently from a single one (grouped conv
    weight gradients, batched CLIP: close, not bitwise equal). At k = 0 every RMS starts from the first step's
    large gradient (the direction between nearly identical images: 1e5 times later ones), which keeps later
    steps small and insensitive; a layer first chosen later starts from ordinary gradient sizes.
    """
    return isinstance(adaptation.g_train, Full) and adaptation.config.selects_layers


def _first_step_of_a_parameter(adaptation: Adaptation) -> bool:
    """Whether this step trains a parameter that has no Adam state yet (a layer chosen for the first time)."""
    state = adaptation.optimiser.state
    return any(parameter.requires_grad and parameter not in state for parameter in adaptation.g_train.trainable())


def _batched_step(live: Sequence[_Live]) -> list[torch.Tensor]:
    requests = [run.request for run in live]
    adaptations = [request.adaptation for request in requests]
    generator = adaptations[0].g_frozen
    latents = [_w_plus(request.batch, generator.n_latent) for request in requests]
    sizes = [w.shape[0] for w in latents]
    noise_maps = []
    for run, adaptation, size in zip(live, adaptations, sizes, strict=True):
        with run.rng.active():
            noise_maps.append(_noise(generator, adaptation, size))
    noise = [torch.cat(maps) for maps in zip(*noise_maps, strict=True)]
    for adaptation in adaptations:
        adaptation.optimiser.zero_grad(set_to_none=True)
    if isinstance(adaptations[0].g_train, Full):
        images = render_full_packed([a.g_train.trained for a in adaptations], torch.cat(latents), noise)
    else:
        images = render_packed([a.g_train for a in adaptations], sizes, [torch.cat(latents)], input_is_latent=True,
                               noise=noise)[0]
    losses = [adaptation.loss_of(member_images, request.batch, member_embeddings)
              for adaptation, request, member_images, member_embeddings
              in zip(adaptations, requests, images.split(sizes), _embeddings(adaptations[0], images, sizes))]
    torch.stack(losses).sum().backward()
    return [adaptation.finish_step(loss) for adaptation, loss in zip(adaptations, losses, strict=True)]
