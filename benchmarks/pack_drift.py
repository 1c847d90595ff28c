"""How far packed members' weights drift from the same runs alone, step by step (the packs' 1e-4 promise).

    python benchmarks/pack_drift.py [--params stylespace] [--k 2] [--steps 20] [--members 2]
    python benchmarks/pack_drift.py --params full --k 2 --steps 24 --batch-all
    python benchmarks/pack_drift.py --params full --k 2 --steps 6 --versus threads

Runs `--members` trials on the built-in tiny models (lr, seed, target and lambda_global varied as in
tests/test_pack.py; the live frozen side) once each alone (`run_adaptation`) and once as one pack
(`train_pack`), records every trained tensor after each optimiser step and prints, per member, the largest
absolute weight difference after each step ("!" where the chosen layers differ). `--batch-all` batches the steps of full
members with layer selection too, which a pack takes one at a time (`pack._steps_alone`), to measure why. `--versus threads` compares the
runs alone with one torch thread against the same runs alone with two instead: how far the alone run itself
moves when only float rounding changes.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from nada_sweep.adapt import nada, pack
from nada_sweep.adapt.pack import PackMember, train_pack
from nada_sweep.adapt.run import run_adaptation
from nada_sweep.adapt.settings import AdaptConfig, ClipSpec

VARIANTS = ({"lr": 0.05, "seed": 0}, {"lr": 0.02, "seed": 1, "target": "oil painting"},
            {"lr": 0.08, "seed": 0, "lambda_global": 0.5})

Record = dict[str, list[tuple[list[int], dict[str, torch.Tensor]]]]  # config json -> per step (layers, tensors)


def _configs(params: str, k: int, steps: int, members: int) -> list[AdaptConfig]:
    base = AdaptConfig(generator="builtin:tiny", clip=[ClipSpec(name="builtin:tiny")], source="photo",
                       target="pencil sketch", steps=steps, eval_every=steps, n_eval=4, n_samples=2, device="cpu",
                       params=params, k=k, auto_layer_batch=2, auto_layer_iters=2)
    return [base.model_copy(update=VARIANTS[i % len(VARIANTS)] | {"seed": i}) for i in range(members)]


_FINISH_STEP = nada.Adaptation.finish_step


def _recording(record: Record):
    """Adaptation.finish_step, also storing the run's trained tensors after each step in `record`."""

    def finish_step(adaptation: nada.Adaptation, loss: torch.Tensor) -> torch.Tensor:
        result = _FINISH_STEP(adaptation, loss)
        tensors = {name: p.detach().clone() for name, p in adaptation.g_train.named_parameters()}
        record.setdefault(adaptation.config.model_dump_json(), []).append(
            (list(adaptation.chosen_indices or []), tensors))
        return result

    return finish_step


def _drift(first: Record, second: Record) -> None:
    for index, key in enumerate(first):
        cells = []
        for step, ((layers_a, a), (layers_b, b)) in enumerate(zip(first[key], second[key], strict=True), 1):
            difference = max((a[name] - b[name]).abs().max().item() for name in a)
            cells.append(f"{step}:{difference:.0e}{'' if layers_a == layers_b else '!'}")
        print(f"member {index}: " + " ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="stylespace")
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--batch-all", action="store_true", help="batch the steps of full members with k > 0 too")
    parser.add_argument("--versus", choices=("pack", "threads"), default="pack")
    args = parser.parse_args()
    configs = _configs(args.params, args.k, args.steps, args.members)
    if args.batch_all:
        pack._steps_alone = lambda adaptation: False  # measure what stepping them alone prevents
    work = Path(tempfile.mkdtemp(prefix="pack-drift-"))
    alone: Record = {}
    other: Record = {}
    torch.set_num_threads(1)
    nada.Adaptation.finish_step = _recording(alone)
    for i, config in enumerate(configs):
        run_adaptation(config, work / f"alone{i}")
    nada.Adaptation.finish_step = _recording(other)
    if args.versus == "threads":
        torch.set_num_threads(2)
        for i, config in enumerate(configs):
            run_adaptation(config, work / f"threads{i}")
    else:
        train_pack([PackMember(config, work / f"packed{i}") for i, config in enumerate(configs)])
    print(f"{args.params}, k = {args.k}, {args.steps} steps: largest weight difference, alone vs "
          f"{'alone with 2 threads' if args.versus == 'threads' else 'packed'}, after each step")
    _drift(alone, other)


if __name__ == "__main__":
    main()
