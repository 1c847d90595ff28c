"""Runs in every parametrization: light modes train only their offsets, leave generator.pt (folded) and
domain.pt, resume from their own state, and select layers with k as full fine-tuning does."""

from __future__ import annotations

import pytest
import torch

from nada_sweep.adapt.domains import apply_domain, load_domain, resolve_base
from nada_sweep.adapt.nada import Adaptation, LiveFrozenSide, load_guidance
from nada_sweep.adapt.params import PARAMETRIZATIONS
from nada_sweep.adapt.run import run_adaptation
from nada_sweep.errors import UserError
from nada_sweep.metric_rules import UNSETTLED
from nada_sweep.models.checkpoints import load_generator
from nada_sweep.run_files import DOMAIN, GENERATOR, STATE, RunFolder
from nada_sweep.sampling import fixed_latents, render

LIGHT = [name for name in PARAMETRIZATIONS if name != "full"]


@pytest.mark.parametrize("params", LIGHT)
def test_light_run_leaves_a_folded_generator_and_its_domain_file(tiny_config, tmp_path, params):
    config = tiny_config.model_copy(update={"params": params, "lr": 0.05})
    summary = run_adaptation(config, tmp_path / "run")
    assert summary.status == "ok"
    folded = load_generator(tmp_path / "run" / GENERATOR)
    assert folded.metadata["params"] == params and folded.metadata["trainable"] > 0
    domain = load_domain(tmp_path / "run" / DOMAIN)
    assert domain.mode == params and domain.metadata["step"] == summary.best_step
    base = load_generator(resolve_base(domain, None, "domain.pt")).generator
    light = apply_domain(domain, base)
    w = fixed_latents(base, 3, seed=5, truncation=0.7)
    via_offsets, via_file = render(light, w), render(folded.generator, w)
    assert (via_offsets - via_file).abs().max().item() < 1e-5
    assert (via_file - render(base, w)).abs().max().item() > 1e-3  # it did adapt


@pytest.mark.parametrize("params", ["full", *LIGHT])
def test_only_the_selected_layers_numbers_receive_gradients(tiny_config, params):
    config = tiny_config.model_copy(update={"params": params, "k": 2, "auto_layer_batch": 2})
    loaded = load_generator("builtin:tiny")
    adaptation = Adaptation(config, loaded, load_guidance(config, torch.device("cpu")), torch.device("cpu"))
    frozen_before = {k: v.clone() for k, v in adaptation.g_frozen.state_dict().items()}
    adaptation.step(0, LiveFrozenSide(adaptation))
    with_grad = [p for p in adaptation.g_train.parameters() if p.grad is not None]
    assert with_grad and len(with_grad) < len(list(adaptation.g_train.parameters()))
    if params != "full":  # the frozen generator, which light modes render through, never changes
        assert all(torch.equal(v, adaptation.g_frozen.state_dict()[k]) for k, v in frozen_before.items())
        assert all(p.grad is None for p in adaptation.g_frozen.parameters())


def test_light_run_resumes_from_its_offsets(tiny_config, tmp_path):
    config = tiny_config.model_copy(update={"params": "stylespace", "lr": 0.05})

    class Stop(Exception):
        pass

    def stop(entry):
        raise Stop

    with pytest.raises(Stop):
        run_adaptation(config, tmp_path / "resumed", on_eval=stop)
    assert (tmp_path / "resumed" / STATE).stat().st_size < 100_000  # offsets and Adam's moments only
    resumed = run_adaptation(config, tmp_path / "resumed")
    straight = run_adaptation(config, tmp_path / "straight")
    assert resumed.status == straight.status == "ok"
    assert resumed.best_metrics["clip_direction"] == pytest.approx(straight.best_metrics["clip_direction"], abs=1e-5)


def test_sparse_mode_never_keeps_a_step_taken_while_pruning(tiny_config, tmp_path):
    config = tiny_config.model_copy(update={"params": "stylespace_sparse", "steps": 12, "eval_every": 2})
    summary = run_adaptation(config, tmp_path / "run")
    history = RunFolder(tmp_path / "run").history()
    unsettled = [entry["step"] for entry in history if entry.get(UNSETTLED)]
    assert unsettled and summary.best_step > max(unsettled)


def test_compile_is_refused_in_light_modes(tiny_config):
    with pytest.raises(ValueError, match="compile"):
        tiny_config.model_copy(update={"params": "stylespace", "compile": True}).model_validate(
            {**tiny_config.model_dump(), "params": "stylespace", "compile": True})


def test_a_run_recorded_before_params_existed_is_not_a_different_configuration(tiny_config, tmp_path):
    import json

    run_adaptation(tiny_config, tmp_path / "run")
    record_path = tmp_path / "run" / "config.json"
    record = json.loads(record_path.read_text())
    del record["config"]["params"], record["config"]["lambda_indomain"]
    record["config"]["layer_map"] = "true"
    record_path.write_text(json.dumps(record))
    assert run_adaptation(tiny_config, tmp_path / "run").reused
    with pytest.raises(UserError, match="different configuration"):
        run_adaptation(tiny_config.model_copy(update={"params": "stylespace"}), tmp_path / "run")
