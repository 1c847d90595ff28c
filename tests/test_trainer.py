"""One adaptation run end to end on tiny real models: learning, files, resume, refusal, determinism."""

from __future__ import annotations

import json

import pytest
import torch

from nada_sweep.adapt.layers import layers_for_indices
from nada_sweep.adapt.nada import Adaptation, LiveFrozenSide, load_guidance
from nada_sweep.adapt.run import run_adaptation
from nada_sweep.errors import UserError
from nada_sweep.images import PNG_LABEL_KEY
from nada_sweep.models.checkpoints import load_generator
from nada_sweep.run_files import RunFolder
from PIL import Image


def test_run_folder_files(tiny_config, tmp_path):
    seen = []
    summary = run_adaptation(tiny_config, tmp_path / "run", on_eval=seen.append, labels={"domain": "sketch"})
    folder = RunFolder(tmp_path / "run")
    assert summary.status == "ok" and summary.steps_done == 6
    assert [entry["step"] for entry in seen] == [3, 6]
    assert [entry["step"] for entry in folder.history()] == [3, 6]
    for entry in folder.history():
        assert {"loss", "clip_direction", "clip_quality", "diversity", "diversity_ratio", "preservation"} <= set(entry)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["target"] == "pencil sketch" and config["labels"] == {"domain": "sketch"}
    assert config["random_weights"] is True
    for name in ("source.png", "step_000003.png", "step_000006.png"):
        image = Image.open(tmp_path / "run" / "samples" / name)
        assert image.width > image.height  # one row of n_samples images
        assert "RANDOM-WEIGHT" in image.text[PNG_LABEL_KEY]
    assert not (tmp_path / "run" / "state.pt").exists()
    adapted = load_generator(tmp_path / "run" / "generator.pt")
    assert adapted.metadata["step"] == summary.best_step
    assert adapted.metadata["random_weights"] is True


def test_training_steps_lower_the_directional_loss(tiny_config):
    # On one fixed batch and fixed noise, the optimiser must drive the loss down step after step.
    loaded = load_generator(tiny_config.generator)
    device = torch.device("cpu")
    adaptation = Adaptation(tiny_config.model_copy(update={"lr": 0.01}), loaded, load_guidance(tiny_config, device), device)
    adaptation.randomize_noise = False
    torch.manual_seed(0)
    batch = LiveFrozenSide(adaptation).next_batch(4)
    losses = [adaptation.train_step(batch) for _ in range(12)]
    assert losses[-1] < losses[0] - 0.05


def test_same_seed_same_run(tiny_config, tmp_path):
    a = run_adaptation(tiny_config, tmp_path / "a")
    b = run_adaptation(tiny_config, tmp_path / "b")
    assert [e["loss"] for e in a.history] == [e["loss"] for e in b.history]
    wa = torch.load(tmp_path / "a" / "generator.pt", weights_only=True)["g_ema"]
    wb = torch.load(tmp_path / "b" / "generator.pt", weights_only=True)["g_ema"]
    assert all(torch.equal(wa[key], wb[key]) for key in wa)


def test_interrupted_run_resumes_to_the_same_result(tiny_config, tmp_path):
    straight = run_adaptation(tiny_config, tmp_path / "straight")

    class Stop(Exception):
        pass

    def stop_after_first_eval(entry):
        raise Stop

    with pytest.raises(Stop):
        run_adaptation(tiny_config, tmp_path / "resumed", on_eval=stop_after_first_eval)
    assert RunFolder(tmp_path / "resumed").status()["status"] == "failed"
    assert (tmp_path / "resumed" / "state.pt").exists()
    resumed = run_adaptation(tiny_config, tmp_path / "resumed")
    assert resumed.status == "ok"
    assert [e["loss"] for e in resumed.history] == pytest.approx([e["loss"] for e in straight.history])


def test_the_evaluations_a_continued_run_keeps(tiny_config, tmp_path):
    """kept_history: what the sweep replays to Tune for a trial it continues, and what the continued run keeps."""

    def interrupt_at_the_last_evaluation(entry):
        if entry["step"] == tiny_config.steps:
            raise KeyboardInterrupt

    folder = RunFolder(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run_adaptation(tiny_config, folder.root, on_eval=interrupt_at_the_last_evaluation)
    assert folder.status()["status"] == "interrupted" and folder.path("state.pt").exists()
    assert [e["step"] for e in folder.kept_history()] == [3, 6]  # everything: nothing is left to evaluate
    folder.update_status(folder.state(), None, step=3)  # as if it had stopped before the second evaluation
    assert [e["step"] for e in folder.kept_history()] == [3]
    folder.path("state.pt").unlink()  # no checkpoint: a continued run starts over
    assert folder.kept_history() == [] and len(folder.history()) == 2
    finished = run_adaptation(tiny_config, tmp_path / "finished")
    assert RunFolder(tmp_path / "finished").kept_history() == finished.history


def test_finished_run_is_not_redone_and_other_config_is_refused(tiny_config, tmp_path):
    run_adaptation(tiny_config, tmp_path / "run")
    mtime = (tmp_path / "run" / "generator.pt").stat().st_mtime_ns
    again = run_adaptation(tiny_config, tmp_path / "run")
    assert again.reused and (tmp_path / "run" / "generator.pt").stat().st_mtime_ns == mtime
    with pytest.raises(UserError, match="different configuration"):
        run_adaptation(tiny_config.model_copy(update={"lr": 0.01}), tmp_path / "run")


def test_k_beyond_n_latent_is_refused(tiny_config, tmp_path):
    n_latent = load_generator("builtin:tiny").generator.n_latent
    with pytest.raises(UserError, match=rf"k: larger than the generator's n_latent \({n_latent} .*\(got {n_latent + 1}\)"):
        run_adaptation(tiny_config.model_copy(update={"k": n_latent + 1}), tmp_path / "run")


def test_gradients_reach_only_the_selected_layers(tiny_config):
    config = tiny_config.model_copy(update={"k": 2})
    loaded = load_generator(config.generator)
    adaptation = Adaptation(config, loaded, load_guidance(config, torch.device("cpu")), torch.device("cpu"))
    indices = adaptation.choose_layers()
    adaptation.train_step(LiveFrozenSide(adaptation).next_batch(2))
    g = adaptation.g_train
    selected = {id(p) for layer in layers_for_indices(g, indices, "driven") for p in layer.parameters()}
    assert selected
    with_grad = {id(p) for p in g.parameters() if p.grad is not None}
    assert with_grad == selected


@pytest.mark.slow
def test_patch_and_global_losses_train_live_and_through_the_bank(tiny_config, tmp_path):
    from nada_sweep.adapt.bank import bank_frozen_side

    plain = tiny_config.model_copy(update={"steps": 2, "eval_every": 2})
    config = plain.model_copy(update={"lambda_patch": 0.5, "lambda_global": 0.5})
    live = run_adaptation(config, tmp_path / "live")
    # Through the bank the source images must be rendered too: the patch loss crops them.
    banked = run_adaptation(config, tmp_path / "banked", frozen_side=bank_frozen_side(tmp_path / "bank", 2))
    without = run_adaptation(plain, tmp_path / "plain")
    for summary in (live, banked, without):
        assert summary.status == "ok" and summary.steps_done == 2
    losses = [summary.history[-1]["loss"] for summary in (live, banked, without)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[0] != pytest.approx(losses[2], abs=1e-3)  # the extra terms count in the loss
