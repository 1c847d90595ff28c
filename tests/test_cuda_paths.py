"""What a CPU can show of the CUDA path: tensors made on the inputs' device, no trial on the CPU while it holds a
GPU, text embeddings that do not depend on the precision they were first computed in, resumed step counters on
the CPU, training steps that read nothing back from the device, and peak GPU memory in the leaderboard.

(benchmarks/gpu_smoke.sh runs the same paths on a real GPU.)
"""

from __future__ import annotations

import csv
import types

import pytest
import torch

from nada_sweep.adapt.params import build_params
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from nada_sweep import devices
from nada_sweep.adapt import layers
from nada_sweep.adapt.bank import bank_key
from nada_sweep.adapt.losses import _raw_text_embedding, template_text_embedding, text_direction
from nada_sweep.adapt.nada import Adaptation, LiveFrozenSide, load_guidance
from nada_sweep.adapt.run import _TrainingProgress, run_adaptation
from nada_sweep.adapt.settings import AdaptConfig
from nada_sweep.metric_rules import GPU_PEAK_MEM
from nada_sweep.models.checkpoints import load_generator
from nada_sweep.models.clip_models import build_tiny_clip, wrap_clip
from nada_sweep.report import build_report
from nada_sweep.run_files import RunFolder
from nada_sweep.sweep.trainable import PACK_KEY, PackSpec, TrialSpec, run_pack
from report_helpers import fake_trial, line

META = torch.device("meta")
CPU = torch.device("cpu")
READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
         torch.Tensor.__int__, torch.equal}


class DeviceRecorder(TorchFunctionMode):
    """Records the device of every tensor torch hands back, and every call that reads a value back to Python.

    Meta tensors hold no values: a read of one is answered with 0, 1, 2, ... so that code can go on. Reads of
    the tensors in `expected` (CPU-side values such as Adam's step counters) are not recorded.
    """

    def __init__(self, expected: tuple[torch.Tensor, ...] = ()) -> None:
        super().__init__()
        self.devices: set[str] = set()
        self.reads: list[str] = []
        self.expected = {id(tensor) for tensor in expected}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in READS and id(args[0]) not in self.expected:
            self.reads.append(func.__name__)
            if func is torch.Tensor.tolist and args[0].is_meta:
                return list(range(args[0].numel()))
        result = func(*args, **(kwargs or {}))
        self.devices |= {leaf.device.type for leaf in tree_leaves(result) if isinstance(leaf, torch.Tensor)}
        return result


def test_layer_search_makes_every_tensor_on_the_device_of_its_inputs():
    # On CUDA the search's topk indices live on the GPU; a candidate list made on the CPU cannot be indexed by them.
    generator = load_generator("builtin:tiny").generator.to(META)
    w0 = torch.randn(2, generator.style_dim, device=META)
    with DeviceRecorder() as recorder:
        chosen = layers.pick_w_indices(generator, w0, lambda image: image.square().mean(), 2, 1,
                                       candidates=[0, 1, 2, 3])
    assert len(chosen) == 2
    assert recorder.devices == {"meta"}


def test_most_moved_picks_the_k_largest_among_the_candidates():
    movement = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.8])
    assert layers.most_moved(movement, 2, [0, 2, 3]) == [3, 2]
    assert layers.most_moved(movement, 9) == [1, 4, 3, 2, 0]


def _gpu_spec(tmp_path, tiny_config, gpus: float) -> dict:
    spec = TrialSpec(index=0, domain="sketch", name="k=0", out_dir=str(tmp_path / "trial"), steps=tiny_config.steps,
                     config=tiny_config.model_dump(mode="json"), labels={})
    return {PACK_KEY: PackSpec(index=0, members=[spec], cpus=2, gpus=gpus).model_dump(mode="json")}


def test_a_trial_given_a_gpu_without_cuda_is_refused_with_what_torch_reports(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also where this test runs on a GPU machine
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "")
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")  # restored to unset afterwards, whatever the trial sets
    config = _gpu_spec(tmp_path, tiny_config.model_copy(update={"device": "auto"}), gpus=0.5)
    with pytest.raises(devices.CudaUnavailable) as refused:
        run_pack(config)
    message = str(refused.value)
    assert "given 0.5 GPU" in message and f"torch {torch.__version__} built for CUDA" in message
    assert "torch.cuda.device_count() = " in message and "CUDA_VISIBLE_DEVICES" in message
    folder = RunFolder(tmp_path / "trial")
    assert folder.state() == "failed" and "CudaUnavailable: this trial was given 0.5 GPU" in folder.status()["error"]
    assert folder.history() == [] and not folder.path("config.json").exists()  # nothing trained on the CPU


def test_text_embeddings_cached_under_bf16_autocast_are_the_fp32_ones():
    # A worker's first trial may run CLIP under bf16 autocast; the cached text embeddings serve fp32 trials too.
    under_autocast, plain = (wrap_clip(build_tiny_clip(seed=0), "builtin:tiny") for _ in range(2))
    def embeddings(clip):
        return [text_direction(clip, "photo", "sketch"), template_text_embedding(clip, "sketch"),
                _raw_text_embedding(clip, "a sketch")]

    with torch.autocast("cpu", dtype=torch.bfloat16):
        computed = embeddings(under_autocast)
    expected = embeddings(plain)
    for got, want in zip(computed, expected):
        assert got.dtype == torch.float32 and torch.equal(got, want)


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter:UserWarning")
def test_resume_keeps_adam_step_counters_on_the_cpu(tiny_config, tmp_path):
    class Stop(Exception):
        pass

    def stop(entry):
        raise Stop

    with pytest.raises(Stop):
        run_adaptation(tiny_config, tmp_path / "run", on_eval=stop)
    # The trained side on another device (meta stands in for a GPU): moments follow it, step counters stay put.
    g_train = build_params("full", load_generator("builtin:tiny").generator.to(META))
    resumed = types.SimpleNamespace(device=META, g_train=g_train, optimiser=torch.optim.Adam(g_train.parameters()),
                                    steps_done=0)
    progress = _TrainingProgress.restore(RunFolder(tmp_path / "run"), resumed, tiny_config.select_metric)
    assert progress.step == tiny_config.eval_every
    states = list(resumed.optimiser.state.values())
    assert states and all(state["step"].device == CPU and state["exp_avg"].device == META for state in states)


def test_training_steps_after_the_first_read_nothing_back_from_the_device(tiny_config):
    # Each read (item, equal, a tensor in an `if`) makes the CPU wait for the GPU before queueing more work.
    adaptation = Adaptation(tiny_config, load_generator(tiny_config.generator), load_guidance(tiny_config, CPU), CPU)
    frozen = LiveFrozenSide(adaptation)
    adaptation.step(0, frozen)
    # Adam reads its step counters, which live on the CPU (see the resume test) and cost no wait.
    counters = tuple(state["step"] for state in adaptation.optimiser.state.values())
    assert counters and all(counter.device == CPU for counter in counters)
    with DeviceRecorder(expected=counters) as recorder:
        losses = [adaptation.step(step, frozen) for step in (1, 2)]
    assert recorder.reads == []
    assert all(isinstance(loss, torch.Tensor) and loss.ndim == 0 for loss in losses)


def test_compile_with_layer_selection_is_refused_with_the_reason(tiny_config):
    with pytest.raises(ValueError, match="compile: true cannot be combined with adaptive layer selection"):
        AdaptConfig(**tiny_config.model_dump() | {"compile": True, "k": 2})
    AdaptConfig(**tiny_config.model_dump() | {"compile": True, "k": 2, "auto_layer_iters": 0})  # no search: fine


def test_the_bank_key_follows_every_cuda_precision_setting(tiny_config):
    keys = {bank_key(tiny_config.model_copy(update=change))
            for change in ({}, {"cuda_tf32": False}, {"cuda_bf16_clip": True})}
    assert len(keys) == 3


def test_peak_gpu_memory_is_recorded_on_cuda_only_and_shown_per_trial(tiny_config, tmp_path):
    assert devices.peak_memory_metrics(CPU) == {}
    summary = run_adaptation(tiny_config, tmp_path / "cpu-run")
    assert all(GPU_PEAK_MEM not in entry for entry in summary.history)

    root = tmp_path / "sweep"
    fake_trial(root, "sketch", "gpu", [line(2, **{GPU_PEAK_MEM: 3.25}), line(4, **{GPU_PEAK_MEM: 3.5})])
    fake_trial(root, "sketch", "cpu", [line(2), line(4)])
    build_report(root)
    with (root / "leaderboard.csv").open() as handle:
        rows = {row["trial"]: row for row in csv.DictReader(handle)}
    assert rows["gpu"][GPU_PEAK_MEM] == "3.5" and rows["cpu"][GPU_PEAK_MEM] == ""
    assert GPU_PEAK_MEM in (root / "leaderboard.md").read_text()
