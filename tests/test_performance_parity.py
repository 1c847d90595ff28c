"""The savings keep the math: optimised steps equal faithful ones, and the shared frozen bank equals live work.

(Fast vs straightforward generator kernels: tests/test_stylegan2.py.)
"""

from __future__ import annotations

import fcntl

import pytest
import torch

from nada_sweep.adapt.bank import (
    BankedFrozenSide,
    bank_entries,
    bank_frozen_side,
    bank_key,
    compute_entry,
    open_bank,
)
from nada_sweep.adapt.nada import Adaptation, FrozenBatch, LiveFrozenSide, load_guidance
from nada_sweep.adapt.run import run_adaptation
from nada_sweep.models.checkpoints import load_generator

CPU = torch.device("cpu")
REL = 1e-4
# Inductor reorders and fuses reductions: a gradient that sums over every pixel (a noise weight's) carries the
# most rounding. Measured on a CI machine: 1.7e-4 relative for conv1.noise.weight; a wrong kernel is off by O(1).
COMPILED_GRAD_REL = 1e-3


def _adaptation(config, faithful: bool) -> Adaptation:
    config = config.model_copy(update={"faithful": faithful, "lr": 0.01})
    adaptation = Adaptation(config, load_generator(config.generator), load_guidance(config, CPU), CPU)
    adaptation.randomize_noise = False  # identical noise in both runs
    return adaptation


def _step(adaptation: Adaptation, batch: FrozenBatch, seed: int) -> tuple[float, list[int] | None]:
    torch.manual_seed(seed)  # the selection's latents
    if adaptation.config.selects_layers:
        adaptation.choose_layers()
    return adaptation.train_step(batch).item(), adaptation.chosen_indices


def _assert_same_weights(a: Adaptation, b: Adaptation) -> None:
    for (name, pa), pb in zip(a.g_train.named_parameters(), b.g_train.parameters()):
        scale = pa.detach().abs().max().item() + 1e-12
        assert (pa - pb).abs().max().item() <= REL * scale, name


@pytest.mark.parametrize("k", [0, 3, "n_latent"])
def test_optimised_and_faithful_steps_agree(tiny_config, k):
    n_latent = load_generator(tiny_config.generator).generator.n_latent
    config = tiny_config.model_copy(update={"k": n_latent if k == "n_latent" else k})
    faithful, optimised = _adaptation(config, True), _adaptation(config, False)
    torch.manual_seed(0)
    batches = [LiveFrozenSide(faithful).next_batch(config.batch) for _ in range(3)]
    start = [p.detach().clone() for p in optimised.g_train.parameters()]
    for index, batch in enumerate(batches):
        loss_f, chosen_f = _step(faithful, batch, seed=100 + index)
        loss_o, chosen_o = _step(optimised, batch, seed=100 + index)
        assert loss_o == pytest.approx(loss_f, rel=REL)
        if config.k:
            # k >= the candidates: the optimised run skips the search, whose top set is every candidate
            assert sorted(chosen_o) == sorted(chosen_f)
            assert len(chosen_o) == min(config.k, len(optimised.candidates))
        _assert_same_weights(faithful, optimised)
    moved = sum((p - s).abs().sum().item() for p, s in zip(optimised.g_train.parameters(), start))
    assert moved > 0


def test_layer_search_without_weight_gradients_picks_the_same_indices(tiny_config):
    # A search that can rank: k below n_latent, several W+ iterations, several seeds.
    config = tiny_config.model_copy(update={"k": 4, "auto_layer_iters": 2})
    faithful, optimised = _adaptation(config, True), _adaptation(config, False)
    for seed in range(3):
        torch.manual_seed(seed)
        z = torch.randn(config.auto_layer_batch, faithful.g_frozen.style_dim)
        assert faithful.choose_layers(z) == optimised.choose_layers(z)
    assert all(p.grad is None for p in faithful.g_train.parameters())  # the search leaves no weight gradients


def test_bank_batch_gives_the_same_step_as_live_latents(tiny_config):
    """A bank entry (W+ tensor, stored embeddings) trains exactly like the live frozen side of the same w."""
    live, banked = _adaptation(tiny_config, False), _adaptation(tiny_config, False)
    torch.manual_seed(3)
    live_batch = LiveFrozenSide(live).next_batch(2)  # fixed noise buffers (randomize_noise False)
    (w,) = live_batch.styles
    w_plus = w.unsqueeze(1).repeat(1, banked.g_frozen.n_latent, 1)
    with torch.no_grad():  # what the bank stores: the frozen side rendered from the W+ it hands out
        images = banked.g_frozen([w_plus], input_is_latent=True, randomize_noise=False)[0]
    bank_batch = FrozenBatch([w_plus], [e.clone() for e in banked.guidance.embed_source(images)], None)
    for a, b in zip(live_batch.source_embeddings, bank_batch.source_embeddings):
        assert torch.allclose(a, b, rtol=REL, atol=1e-6)
    for _ in range(2):
        assert banked.train_step(bank_batch).item() == pytest.approx(live.train_step(live_batch).item(), rel=REL)
    _assert_same_weights(live, banked)


def test_bank_file_equals_entries_computed_on_the_spot(tiny_config, tmp_path):
    config = tiny_config.model_copy(update={"mixing": 0.5})
    adaptation = _adaptation(config, False)
    side = open_bank(adaptation, tmp_path, size=4)
    assert (tmp_path / f"{bank_key(config)}.pt").is_file()
    reopened = open_bank(_adaptation(config, False), tmp_path, size=4, start_step=2)
    assert len(reopened.entries) == 4
    live = BankedFrozenSide(adaptation)  # no file: computes each entry
    for index in range(6):  # past the bank's end too: the same function fills in
        stored = side.next_batch(2)
        fresh = live.next_batch(2)
        assert torch.equal(stored.styles[0], fresh.styles[0])
        for a, b in zip(stored.source_embeddings, fresh.source_embeddings):
            assert torch.allclose(a, b, rtol=REL, atol=1e-6)
        if index >= 2:
            assert torch.equal(reopened.next_batch(2).styles[0], stored.styles[0])  # resumed at step 2


def test_style_mixing_entries_hand_out_the_rendered_w_plus(tiny_config):
    config = tiny_config.model_copy(update={"mixing": 1.0})
    adaptation = _adaptation(config, False)
    n_latent = adaptation.g_frozen.n_latent
    crossovers = set()
    for index in range(6):
        entry = compute_entry(adaptation, index)
        assert 1 <= entry.crossover <= n_latent - 1
        crossovers.add(entry.crossover)
        w_plus = entry.w_plus(n_latent)
        assert torch.equal(w_plus[:, 0], entry.w) and torch.equal(w_plus[:, -1], entry.w_mix)
        assert not torch.equal(entry.w, entry.w_mix)
    assert len(crossovers) > 1
    assert compute_entry(adaptation, 0).crossover == compute_entry(adaptation, 0).crossover  # seeded


def test_bank_key_and_sizes(tiny_config):
    key = bank_key(tiny_config)
    assert bank_key(tiny_config.model_copy(update={"k": 3, "lr": 0.1, "target": "cat"})) == key
    for change in ({"seed": 1}, {"batch": 4}, {"mixing": 0.9}):
        assert bank_key(tiny_config.model_copy(update=change)) != key
    configs = [tiny_config.model_copy(update=u) for u in ({"steps": 5}, {"steps": 9}, {"steps": 7, "seed": 2})]
    assert bank_entries(configs) == [9, 9, 7]


def test_run_results_do_not_depend_on_the_bank_file(tiny_config, tmp_path):
    """Bank built by this run, bank built by another, bank busy (entries computed live), bank too small."""
    losses = []
    for name, size, hold_lock in (("built", 6, False), ("reused", 6, False), ("busy", 6, True), ("small", 2, False)):
        bank = tmp_path / ("bank-" + name if name in ("busy", "small") else "bank")
        bank.mkdir(exist_ok=True)
        with open(bank / f"{bank_key(tiny_config)}.lock", "a+") as lock:
            if hold_lock:  # another trial is building this bank
                fcntl.flock(lock, fcntl.LOCK_EX)
            summary = run_adaptation(tiny_config, tmp_path / name, frozen_side=bank_frozen_side(bank, size))
        assert summary.status == "ok"
        losses.append([entry["loss"] for entry in summary.history])
        assert (bank / f"{bank_key(tiny_config)}.pt").exists() is not hold_lock
    for other in losses[1:]:
        assert other == pytest.approx(losses[0], rel=REL)


def test_cuda_settings_leave_cpu_steps_unchanged(tiny_config):
    """TF32 and bf16 CLIP autocast apply on CUDA only; on a CPU the step is the plain float32 one."""
    plain = _adaptation(tiny_config, False)
    tuned = _adaptation(tiny_config.model_copy(update={"cuda_tf32": False, "cuda_bf16_clip": True}), False)
    torch.manual_seed(0)
    batch = LiveFrozenSide(plain).next_batch(2)
    assert tuned.train_step(batch).item() == plain.train_step(batch).item()
    assert bank_key(tiny_config.model_copy(update={"cuda_bf16_clip": True})) != bank_key(tiny_config)


@pytest.mark.slow
def test_compiled_generator_trains_like_the_eager_one(tiny_config):
    """compile: true compiles g_train in place: the same step, the same parameter names (saved files unchanged)."""
    eager = _adaptation(tiny_config, False)
    compiled = _adaptation(tiny_config.model_copy(update={"compile": True}), False)
    assert list(compiled.g_train.state_dict()) == list(eager.g_train.state_dict())
    torch.manual_seed(0)
    batch, other = LiveFrozenSide(eager).next_batch(2), LiveFrozenSide(eager).next_batch(2)
    # Source embeddings of other latents: with the untrained twin's own, the direction would be that of
    # float rounding between the compiled and eager kernels, and the loss meaningless.
    batch = FrozenBatch(batch.styles, other.source_embeddings, None)
    assert compiled.train_step(batch).item() == pytest.approx(eager.train_step(batch).item(), rel=REL)
    # Gradients, not the stepped weights: Adam's first step is lr * g / (|g| + eps), so a gradient element near
    # eps (1e-8) turns the kernels' float rounding into an O(lr) weight difference; the optimiser is the same.
    graded = 0
    for (name, pe), pc in zip(eager.g_train.named_parameters(), compiled.g_train.parameters(), strict=True):
        assert (pe.grad is None) == (pc.grad is None), name
        if pe.grad is not None:
            scale = pe.grad.abs().max().item() + 1e-12
            assert (pe.grad - pc.grad).abs().max().item() <= COMPILED_GRAD_REL * scale, name
            graded += 1
    assert graded > 0
