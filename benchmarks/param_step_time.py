"""Training-step time and peak memory of each light parametrization against `full`, side by side.

    python benchmarks/param_step_time.py [--sizes 32,256] [--reps 6] [--modes full,stylespace,...]

Configs: rosinality StyleGAN2s with random weights at 32 px (512 channels throughout, style_dim 512, 8 mapping
layers: the config of step_time.py) and at 256 px (channel_multiplier 2), one tiny seeded CLIP model
(32 px ViT), batch 2, directional loss, no layer selection (k = 0), one torch thread per mode.
The step is the trained side of a training step as the trainer runs it with a shared frozen bank: render
the adapted images (random noise), CLIP loss against precomputed source embeddings, backward, Adam step.

Each mode runs in its own process holding what one trial holds (the frozen generator, the parametrization
-- for full, the trained copy -- its optimiser, the CLIP model), so its peak memory is its own: peak
resident set size (VmHWM of /proc/self/status) minus the resident size after the imports, before any model
is built. The processes take turns step by step, so drifting machine load hits all modes alike; ratios are
medians of per-round ratios against full.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_clip_files, make_generator_file, print_table

MODES = ("full", "stylespace", "stylespace_sparse", "domain_mod", "affine")
LR = {"full": 0.002, "affine": 0.002}  # the others: the light modes' 0.05
BATCH = 2


def _memory_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _worker(conn, mode: str, generator_path: str, clip_path: str, batches: int, threads: int) -> None:
    import torch

    from nada_sweep.adapt.losses import ClipGuidance
    from nada_sweep.adapt.params import build_params
    from nada_sweep.models.checkpoints import load_generator
    from nada_sweep.models.clip_models import load_clip

    torch.set_num_threads(threads)
    baseline = _memory_kb("VmRSS")
    torch.manual_seed(0)
    frozen = load_generator(generator_path).generator.eval().requires_grad_(False)
    guidance = ClipGuidance([(load_clip(clip_path), 1.0)], source="photo", target="pencil sketch")
    params = build_params(mode, frozen, steps=1000)
    optimiser = params.make_optimiser(LR.get(mode, 0.05))
    bank = []  # the frozen side, computed once (what the sweep's shared bank hands out)
    with torch.no_grad():
        for _ in range(batches):
            w = frozen.style(torch.randn(BATCH, frozen.style_dim))
            bank.append((w, guidance.embed_source(frozen([w], input_is_latent=True)[0])))
    step = 0
    conn.send(params.num_trainable())
    while conn.recv() == "step":
        w, source_embeddings = bank[step % len(bank)]
        start = time.perf_counter()
        images = params([w], input_is_latent=True, randomize_noise=True)[0]
        loss = guidance.loss(images, source_embeddings)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        step += 1
        params.after_step(step)
        conn.send(time.perf_counter() - start)
    conn.send((_memory_kb("VmHWM") - baseline) / 1024)


def measure(size: int, modes: list[str], reps: int, threads: int, work: Path) -> dict[str, dict[str, float]]:
    generator_path = str(make_generator_file(work, size))
    clip_path = str(make_clip_files(work, 1)[0])
    context = multiprocessing.get_context("spawn")
    workers = {}
    for mode in modes:
        here, there = context.Pipe()
        process = context.Process(target=_worker, args=(there, mode, generator_path, clip_path, reps + 1, threads))
        process.start()
        workers[mode] = (here, process)
    counts = {mode: conn.recv() for mode, (conn, _) in workers.items()}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for round_index in range(reps + 1):  # round 0 warms up
        for mode, (conn, _) in workers.items():
            conn.send("step")
            elapsed = conn.recv()
            if round_index:
                times[mode].append(elapsed)
    results = {}
    for mode, (conn, process) in workers.items():
        conn.send("stop")
        peak_mb = conn.recv()
        process.join()
        results[mode] = {"trainable": counts[mode], "step_s": statistics.median(times[mode]), "peak_mb": peak_mb}
    for mode in modes:
        results[mode]["step/full"] = statistics.median(x / y for x, y in zip(times[mode], times["full"]))
        results[mode]["peak/full"] = results[mode]["peak_mb"] / results["full"]["peak_mb"]
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="32,256", help="generator sizes in px")
    parser.add_argument("--reps", type=int, default=6, help="timed steps per mode and size")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated; full is always included")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per mode's process")
    args = parser.parse_args(argv)
    modes = ["full"] + [m for m in args.modes.split(",") if m and m != "full"]
    work = Path(tempfile.mkdtemp(prefix="nada-bench-params-"))
    results = {}
    for size in (int(s) for s in args.sizes.split(",")):
        results[size] = entry = measure(size, modes, args.reps, args.threads, work)
        print_table(
            f"{size} px: step time (median of {args.reps}) and peak RSS above the post-import baseline; "
            "ratios: median per-round against full",
            ["mode", "trainable", "step s", "step/full", "peak MB", "peak/full"],
            [[m, e["trainable"], e["step_s"], e["step/full"], e["peak_mb"], e["peak/full"]] for m, e in entry.items()],
        )
    return results


if __name__ == "__main__":
    main()
