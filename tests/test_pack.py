"""Packs: members trained in one batched step end exactly where the same runs end alone."""

from __future__ import annotations

import math

import pytest
import torch

from nada_sweep.adapt.bank import bank_frozen_side
from nada_sweep.adapt import pack
from nada_sweep.adapt.pack import PackMember, pack_key, train_pack
from nada_sweep.adapt.params import PARAMETRIZATIONS
from nada_sweep.adapt.run import TrainingDiverged, run_adaptation
from nada_sweep.errors import UserError
from nada_sweep.models.checkpoints import load_generator
from nada_sweep.run_files import DOMAIN, GENERATOR, RunFolder, Status

TOLERANCE = 1e-4
NOT_COMPARED = {"elapsed_s"}  # wall time differs between any two runs


def _members(tiny_config, params: str, **update) -> list:
    base = tiny_config.model_copy(update={"params": params, **update})
    return [
        base.model_copy(update={"lr": 0.05, "seed": 0}),
        base.model_copy(update={"lr": 0.02, "seed": 1, "target": "oil painting"}),
        base.model_copy(update={"lr": 0.08, "seed": 0, "lambda_global": 0.5}),
    ]


def _assert_same_run(alone, packed, weight_tolerance: float = TOLERANCE) -> None:
    a, p = RunFolder(alone), RunFolder(packed)
    assert a.state() is p.state() is Status.OK
    assert a.status()["best_step"] == p.status()["best_step"]
    history_a, history_p = a.history(), p.history()
    assert [e["step"] for e in history_a] == [e["step"] for e in history_p]
    for entry_a, entry_p in zip(history_a, history_p, strict=True):
        assert set(entry_a) == set(entry_p)
        for key in set(entry_a) - NOT_COMPARED:
            if isinstance(entry_a[key], float):
                assert math.isclose(entry_a[key], entry_p[key], abs_tol=TOLERANCE), key
            else:
                assert entry_a[key] == entry_p[key], key
    assert a.path(DOMAIN).exists() == p.path(DOMAIN).exists()
    for name in (GENERATOR, DOMAIN) if a.path(DOMAIN).exists() else (GENERATOR,):  # full runs have no domain.pt
        tensors_a = torch.load(a.path(name), weights_only=True)
        tensors_p = torch.load(p.path(name), weights_only=True)
        weights_a = tensors_a.get("g_ema", tensors_a.get("offsets"))
        weights_p = tensors_p.get("g_ema", tensors_p.get("offsets"))
        assert weights_a is not None and weights_a.keys() == weights_p.keys()
        for key, value in weights_a.items():
            assert (value - weights_p[key]).abs().max().item() <= weight_tolerance, (name, key)


@pytest.mark.slow
@pytest.mark.parametrize("params", list(PARAMETRIZATIONS))
def test_members_equal_the_same_runs_alone(tiny_config, tmp_path, params):
    configs = _members(tiny_config, params)
    bank = bank_frozen_side(tmp_path / "bank", tiny_config.steps)
    for i, config in enumerate(configs):
        run_adaptation(config, tmp_path / f"alone{i}", frozen_side=bank)
    results = train_pack([PackMember(config, tmp_path / f"packed{i}", frozen_side=bank)
                          for i, config in enumerate(configs)])
    assert [r.status for r in results] == [Status.OK] * len(configs)
    for i in range(len(configs)):
        _assert_same_run(tmp_path / f"alone{i}", tmp_path / f"packed{i}")


@pytest.mark.slow
def test_full_members_with_layer_selection_step_alone_in_the_pack(tiny_config, tmp_path, monkeypatch):
    # They share the pack's models and process but not its batched pass (pack._steps_alone), so they end
    # where their alone runs end, beside a full member without layer selection that the pack batches.
    configs = _members(tiny_config, "full", k=2, auto_layer_batch=2, auto_layer_iters=2, steps=12, eval_every=6)
    configs.append(configs[0].model_copy(update={"k": 0, "target": "watercolor"}))
    for i, config in enumerate(configs):
        run_adaptation(config, tmp_path / f"alone{i}")
    batched = []
    real_batched_step = pack._batched_step
    monkeypatch.setattr(pack, "_batched_step", lambda live: batched.append(len(live)) or real_batched_step(live))
    train_pack([PackMember(config, tmp_path / f"packed{i}") for i, config in enumerate(configs)])
    assert batched and set(batched) == {1}  # only the k = 0 member went through the batched pass
    for i in range(len(configs)):
        _assert_same_run(tmp_path / f"alone{i}", tmp_path / f"packed{i}")


@pytest.mark.slow
def test_members_choose_their_own_layers_on_the_live_frozen_side(tiny_config, tmp_path):
    # k > 0: each member searches W+ for its own layers (with its own RNG stream) and trains only those. 18
    # steps: layers are first chosen at later steps too, whose first Adam step the pack must take alone (measured
    # drift at step 18 without that rule 2e-4..6e-4, with it 3e-5).
    # A tenth of the other tests' learning rates: with layers re-chosen every step a parameter's first few Adam
    # steps are close to lr * sign(g), so the rounding by which a batched pass differs turns near-zero gradient
    # elements into weight differences proportional to lr. At lr 0.02..0.08 the worst element drifted 4e-6..2e-3
    # by machine and thread count (a CI machine: 3.7e-4); at a tenth, at most 9e-6 over 1 and 2 threads and three
    # CPU kernel sets. A member trained on another's gradients would still be off by O(lr), 50x the tolerance.
    configs = [config.model_copy(update={"lr": config.lr / 10})
               for config in _members(tiny_config, "stylespace", k=2, auto_layer_batch=2, auto_layer_iters=2,
                                      steps=18, eval_every=6)]
    for i, config in enumerate(configs):
        run_adaptation(config, tmp_path / f"alone{i}")
    train_pack([PackMember(config, tmp_path / f"packed{i}") for i, config in enumerate(configs)])
    source = load_generator("builtin:tiny", torch.device("cpu")).generator.state_dict()
    for i in range(len(configs)):
        _assert_same_run(tmp_path / f"alone{i}", tmp_path / f"packed{i}", TOLERANCE)
        trained = [{key for key, value in torch.load(tmp_path / f"{run}{i}" / GENERATOR, weights_only=True)[
            "g_ema"].items() if not torch.equal(value, source[key])} for run in ("alone", "packed")]
        assert trained[0] == trained[1] and trained[0]  # the same layers chosen and trained
    offsets = torch.load(tmp_path / "packed0" / DOMAIN, weights_only=True)["offsets"]
    assert any(v.abs().max() == 0 for v in offsets.values())  # some layers were not chosen


def test_a_diverging_member_leaves_the_pack_and_the_others_finish(tiny_config, tmp_path):
    good = tiny_config.model_copy(update={"params": "stylespace", "lr": 0.05})
    bad = good.model_copy(update={"lr": 1e37, "target": "oil painting"})  # its offsets overflow: NaN
    results = train_pack([PackMember(good, tmp_path / "good"), PackMember(bad, tmp_path / "bad"),
                          PackMember(good.model_copy(update={"seed": 3}), tmp_path / "good2")])
    assert isinstance(results[1], TrainingDiverged)
    assert RunFolder(tmp_path / "bad").state() is Status.DIVERGED
    assert results[0].status == results[2].status == Status.OK
    assert RunFolder(tmp_path / "good").history()[-1]["step"] == good.steps


def test_a_member_failing_in_its_own_code_leaves_the_others_running(tiny_config, tmp_path):
    good = tiny_config.model_copy(update={"params": "domain_mod", "lr": 0.05})

    def broken(entry):
        raise RuntimeError("the member's reporter broke")

    results = train_pack([PackMember(good, tmp_path / "broken", on_eval=broken), PackMember(good, tmp_path / "ok")])
    assert isinstance(results[0], RuntimeError) and RunFolder(tmp_path / "broken").state() is Status.FAILED
    assert results[1].status == Status.OK


def test_interrupted_pack_resumes_each_member_from_its_own_checkpoint(tiny_config, tmp_path):
    config = tiny_config.model_copy(update={"params": "affine", "lr": 0.05})
    short = config.model_copy(update={"steps": 3, "seed": 2})

    def interrupt(entry):
        raise KeyboardInterrupt

    # Both evaluate at step 3: the short member finishes there, then the long one is interrupted.
    members = [PackMember(short, tmp_path / "short"), PackMember(config, tmp_path / "long", on_eval=interrupt)]
    with pytest.raises(KeyboardInterrupt):
        train_pack(members)
    assert RunFolder(tmp_path / "short").state() is Status.OK  # it finished before the interrupt
    assert RunFolder(tmp_path / "long").state() is Status.INTERRUPTED
    finished_mtime = (tmp_path / "short" / GENERATOR).stat().st_mtime_ns
    results = train_pack([PackMember(short, tmp_path / "short"), PackMember(config, tmp_path / "long")])
    assert results[0].reused and (tmp_path / "short" / GENERATOR).stat().st_mtime_ns == finished_mtime
    assert results[1].status == Status.OK and [e["step"] for e in results[1].history] == [3, 6]
    run_adaptation(config, tmp_path / "straight")
    _assert_same_run(tmp_path / "straight", tmp_path / "long")


def test_full_and_light_runs_and_mixed_generators_are_refused(tiny_config, tmp_path):
    light = tiny_config.model_copy(update={"params": "stylespace"})
    full = light.model_copy(update={"params": "full"})
    with pytest.raises(UserError, match="apart from light"):
        train_pack([PackMember(light, tmp_path / "a"), PackMember(full, tmp_path / "b")])
    with pytest.raises(UserError, match="one batch size"):
        train_pack([PackMember(full, tmp_path / "a"), PackMember(full.model_copy(update={"batch": 4}), tmp_path / "b")])
    assert pack_key(light) == pack_key(light.model_copy(update={"params": "affine", "batch": 4}))
    with pytest.raises(UserError, match="one generator"):
        train_pack([PackMember(light, tmp_path / "a"),
                    PackMember(light.model_copy(update={"generator": "builtin:tiny-other"}), tmp_path / "b")])
    assert not (tmp_path / "a").exists()


def test_a_pack_computes_each_evaluation_source_once(tiny_config, tmp_path, monkeypatch):
    # The unadapted images of the fixed latents and their embeddings: one per eval setting, not one per member.
    from nada_sweep.adapt import evaluate

    computed = []
    real = evaluate.eval_source

    def counted(generator, config, *args):
        computed.append(config.n_eval)
        return real(generator, config, *args)

    monkeypatch.setattr(evaluate, "eval_source", counted)
    light = tiny_config.model_copy(update={"params": "stylespace", "lr": 0.05, "steps": 2, "eval_every": 2})
    members = [light, light.model_copy(update={"seed": 1}), light.model_copy(update={"n_eval": 6})]
    results = train_pack([PackMember(config, tmp_path / f"m{i}") for i, config in enumerate(members)])
    assert [r.status for r in results] == [Status.OK] * 3
    assert sorted(computed) == sorted([light.n_eval, 6])


@pytest.mark.slow
def test_light_members_search_their_layers_together_and_choose_as_alone(tiny_config, tmp_path, monkeypatch):
    # Different search batches and iteration counts: members with the same count search in one batched pass.
    base = tiny_config.model_copy(update={"params": "domain_mod", "k": 3, "auto_layer_batch": 2,
                                          "auto_layer_iters": 1})
    configs = [base.model_copy(update={"lr": 0.05}),
               base.model_copy(update={"lr": 0.1, "seed": 1, "target": "oil painting", "auto_layer_batch": 3}),
               base.model_copy(update={"lr": 0.08, "seed": 2, "auto_layer_iters": 2})]
    for i, config in enumerate(configs):
        run_adaptation(config, tmp_path / f"alone{i}")

    from nada_sweep.adapt import nada

    def not_alone(*args, **kwargs):
        raise AssertionError("a light member searched its layers by itself")

    monkeypatch.setattr(nada, "pick_w_indices", not_alone)
    results = train_pack([PackMember(config, tmp_path / f"packed{i}") for i, config in enumerate(configs)])
    assert [r.status for r in results] == [Status.OK] * len(configs)
    for i in range(len(configs)):
        _assert_same_run(tmp_path / f"alone{i}", tmp_path / f"packed{i}")
