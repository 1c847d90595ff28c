"""The GPU smoke's `pack` check: 8 light trials one after another, each in a process of its own, against the
same 8 as one pack (nada_sweep.adapt.pack.train_pack driven directly) in one process.

Each contender's process is a fresh Python that imports nada-sweep, loads the generator and every CLIP model
from their files and trains, as a separate trial process does: its wall time, measured from outside, counts
the start-up and the loading it pays. Inside, the child reports its load and training times and the most GPU
memory its tensors held (torch.cuda.max_memory_allocated). The shared frozen bank (nada_sweep.adapt.bank) is
built once before timing, by a one-step run in the check's own process, as a sweep builds it once for all its
trials; that also brings the model files into the page cache, so that the first timed process does not pay
alone for reading them from disk.

    python benchmarks/gpu_pack.py --child SPEC.json   # one contender's process (what the check starts)
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
RESULT = "@@CHILD "


@dataclass(frozen=True)
class PackSizes:
    """What the check trains: a generator of `generator_px` (0: builtin:tiny), guided by random-weight CLIP
    models of the `clips` shapes (common.CLIP_SHAPES names, or "tiny"), `members` trials of `steps` steps."""

    generator_px: int
    clips: tuple[str, ...]
    steps: int
    members: int

    @classmethod
    def defaults(cls, device: torch.device) -> PackSizes:
        if device.type == "cuda":  # the case: 256 px, two CLIP models of the sizes a sweep guides with
            return cls(256, ("ViT-B/32", "ViT-B/16"), 20, 8)
        return cls(0, ("tiny", "tiny"), 4, 8)  # the dry run only shows the code runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pack check sizes (default: on CUDA 256 px, ViT-B/32,ViT-B/16, 20 steps, "
                                      "8 members; with --cpu builtin:tiny, tiny,tiny, 4 steps, 8 members)")
    group.add_argument("--pack-px", type=int, help="generator resolution (0: builtin:tiny)")
    group.add_argument("--pack-clips", help="comma-separated CLIP shapes: ViT-B/32, ViT-B/16, ViT-L/14, tiny")
    group.add_argument("--pack-steps", type=int, help="training steps per trial")
    group.add_argument("--pack-members", type=int, help="trials (and members of the pack)")


def flags(args: argparse.Namespace) -> list[str]:
    """The pack options given on the command line, to pass on to the check's own process."""
    given = {"--pack-px": args.pack_px, "--pack-clips": args.pack_clips, "--pack-steps": args.pack_steps,
             "--pack-members": args.pack_members}
    return [f"{flag}={value}" for flag, value in given.items() if value is not None]


def sizes(args: argparse.Namespace, device: torch.device) -> PackSizes:
    default = PackSizes.defaults(device)
    return PackSizes(
        default.generator_px if args.pack_px is None else args.pack_px,
        default.clips if args.pack_clips is None else tuple(args.pack_clips.split(",")),
        args.pack_steps or default.steps,
        args.pack_members or default.members,
    )


@dataclass
class Child:
    """One contender's process: wall time from outside, and what it reported from inside."""

    wall_s: float
    load_s: float
    train_s: float
    peak_gb: float | None
    reserved_gb: float | None
    statuses: list[str]


@dataclass
class PackResult:
    sizes: PackSizes
    warmup_s: float  # building the shared frozen bank, in the check's own process (before timing)
    alone: list[Child]
    pack: Child
    worst_diff: float  # the largest |metric difference| of a member from its trial alone
    files_s: float  # building the model files (before timing)

    def per_hour(self, children: list[Child], what: str = "wall_s") -> float:
        return self.sizes.members * 3600 / sum(getattr(child, what) for child in children)

    @property
    def ratio(self) -> float:
        return self.per_hour([self.pack]) / self.per_hour(self.alone)

    @property
    def train_ratio(self) -> float:
        return self.per_hour([self.pack], "train_s") / self.per_hour(self.alone, "train_s")


def measure(device: torch.device, sizes: PackSizes, deadline: float) -> PackResult:
    """Both contenders on `device`; `deadline` (time.time()) ends any child still running then."""
    with tempfile.TemporaryDirectory(prefix="nada-smoke-pack-") as tmp:
        return _measure(Path(tmp), device, sizes, deadline)


def _measure(work: Path, device: torch.device, sizes: PackSizes, deadline: float) -> PackResult:
    import common

    from nada_sweep.adapt.bank import bank_frozen_side
    from nada_sweep.adapt.run import run_adaptation

    started = time.perf_counter()
    generator = "builtin:tiny" if sizes.generator_px == 0 else str(common.make_generator_file(work, sizes.generator_px))
    clips = [str(path) for path in common.make_shaped_clip_files(work, sizes.clips, device)]
    files_s = time.perf_counter() - started
    configs = common.pack_configs(generator, clips, sizes.steps, str(device), sizes.members)
    bank = {"dir": str(work / "bank"), "entries": sizes.steps}
    warm = time.perf_counter()
    # In this process: a sweep pays for its bank once, and the page cache then holds every model file.
    run_adaptation(configs[0].model_copy(update={"steps": 1, "eval_every": 1}), work / "warmup",
                   frozen_side=bank_frozen_side(bank["dir"], bank["entries"]))
    warmup_s = time.perf_counter() - warm
    alone = [_spawn(work / f"alone{i}", [config], [work / f"alone-{i}"], bank, deadline, packed=False)
             for i, config in enumerate(configs)]
    pack = _spawn(work / "pack", configs, [work / f"pack-{i}" for i in range(len(configs))], bank, deadline,
                  packed=True)
    differences = [0.0]
    for i in range(len(configs)):
        by_itself, packed = common.final_metrics(work / f"alone-{i}"), common.final_metrics(work / f"pack-{i}")
        if by_itself.keys() != packed.keys():
            raise RuntimeError(f"member {i} reports {sorted(packed)}, alone {sorted(by_itself)}")
        differences += [abs(by_itself[k] - packed[k]) for k in by_itself]
    worst = math.nan if any(map(math.isnan, differences)) else max(differences)  # max() would skip a NaN
    return PackResult(sizes, warmup_s, alone, pack, worst, files_s)


def _spawn(folder: Path, configs: list, out_dirs: list[Path], bank: dict, deadline: float, packed: bool
           ) -> Child:
    folder.mkdir(parents=True)
    spec = folder / "spec.json"
    spec.write_text(json.dumps({"configs": [c.model_dump(mode="json") for c in configs],
                                "out_dirs": [str(d) for d in out_dirs], "bank": bank, "pack": packed}))
    left = deadline - time.time()
    if left < 5:
        raise RuntimeError("out of the check's time before all its processes ran")
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(spec)],
                              check=False, capture_output=True, text=True, timeout=left)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{folder.name}: no result before the check's time ran out") from None
    wall = time.perf_counter() - started
    lines = [line.removeprefix(RESULT) for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-4:])
        raise RuntimeError(f"{folder.name}: exit code {done.returncode}: {tail}")
    reported = json.loads(lines[-1])
    if any(status != "ok" for status in reported["statuses"]):
        raise RuntimeError(f"{folder.name}: runs ended {reported['statuses']}")
    return Child(wall_s=wall, **reported)


def child(spec_path: Path) -> None:
    """A contender's process: load the models, train its runs (one alone, or all as one pack), report."""
    spec = json.loads(spec_path.read_text())
    from nada_sweep.adapt.bank import bank_frozen_side
    from nada_sweep.adapt.pack import PackMember, train_pack
    from nada_sweep.adapt.run import run_adaptation
    from nada_sweep.adapt.settings import AdaptConfig
    from nada_sweep.devices import resolve_device
    from nada_sweep.models.checkpoints import load_generator
    from nada_sweep.models.clip_models import load_clip

    configs = [AdaptConfig.model_validate(config) for config in spec["configs"]]
    device = resolve_device(configs[0].device)
    frozen = bank_frozen_side(spec["bank"]["dir"], spec["bank"]["entries"])
    started = time.perf_counter()
    for clip in configs[0].clip:  # the runs find them in load_clip's cache
        load_clip(clip.name, device)
    load_generator(configs[0].generator, device)  # reads the file into load_generator's cache
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    loaded = time.perf_counter()
    if not spec["pack"]:
        results = [run_adaptation(config, out, frozen_side=frozen) for config, out in zip(configs, spec["out_dirs"])]
    else:
        results = train_pack([PackMember(config, out, frozen_side=frozen)
                              for config, out in zip(configs, spec["out_dirs"], strict=True)])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    trained = time.perf_counter()
    gib = 2**30
    on_gpu = device.type == "cuda"
    print(RESULT + json.dumps({
        "load_s": loaded - started, "train_s": trained - loaded,
        # since the last run's start (run_steps resets the peak there, the models already loaded)
        "peak_gb": torch.cuda.max_memory_allocated(device) / gib if on_gpu else None,
        "reserved_gb": torch.cuda.max_memory_reserved(device) / gib if on_gpu else None,
        "statuses": [getattr(r, "status", f"{type(r).__name__}: {r}") for r in results],
    }), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", type=Path, required=True, help="spec file written by the check")
    child(parser.parse_args().child)
