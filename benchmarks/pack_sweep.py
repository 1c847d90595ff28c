"""Trials per hour through `nada-sweep run`: the same sweep with `pack: 8` against `pack: 1`.

    python benchmarks/pack_sweep.py [--steps 20] [--rounds 2] [--domains 8] [--lrs 0.05,0.1]

The sweep: --domains domains of the demo catalog x the --lrs values, `params: stylespace`, k = 0, batch 2, one
evaluation at the end, on the built-in tiny models, `resources: {cpus: 1}` (Ray trains one pack per core). With
`pack: 8` its trials train in packs of up to 8 (as the planner splits them over the cores); with `pack: 1`
each is a Tune trial of its own, as before packs. Both are whole commands in fresh results folders, taking turns
round by round in alternating order. Printed per contender (medians over rounds): the command's wall time, the
span from the first trial's config.json to the last trial's status.json (what training the trials takes,
without Ray's start, the first model loads and the report, which both pay alike), trials per hour of each, and their ratios; and the largest
difference of a trial's final metrics between the two (packed members equal their alone runs within 1e-4).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import final_metrics, median, print_table

from nada_sweep.run_files import CONFIG, STATUS

DEMO_CATALOG = Path(__file__).resolve().parents[1] / "domains" / "ffhq.yaml"
CONTENDERS = {"pack 1": 1, "pack 8": 8}


def write_sweep(folder: Path, steps: int, domains: int, lrs: list[float], pack: int) -> Path:
    import yaml

    entries = yaml.safe_load(DEMO_CATALOG.read_text())["domains"][:domains]
    catalog = folder / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"domains": [{"name": e["name"], "source": e.get("source", "photo"),
                                                    "target": e["target"]} for e in entries]}))
    sweep = folder / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "bench", "generator": "builtin:tiny", "clip": ["builtin:tiny"], "eval_clip": "builtin:tiny",
        "catalog": catalog.name, "train": {"steps": steps, "eval_every": steps, "n_eval": 4, "n_samples": 4,
                                           "params": "stylespace"},
        "search": {"lr": lrs}, "resources": {"cpus": 1, "gpus": 0}, "pack": pack, "report_every": 0,
    }))
    return sweep


def trials_span(trials: list[Path]) -> float:
    """From the first trial's config.json (written once its models are loaded) to the last status.json (written
    as a trial ends): the trials' training, without Ray's start, the first model loads and the report."""
    return (max(t.joinpath(STATUS).stat().st_mtime for t in trials)
            - min(t.joinpath(CONFIG).stat().st_mtime for t in trials))


def run_once(folder: Path, args: argparse.Namespace, pack: int) -> tuple[float, float, dict[str, dict]]:
    folder.mkdir(parents=True)
    sweep = write_sweep(folder, args.steps, args.domains, [float(v) for v in args.lrs.split(",")], pack)
    exe = str(Path(sys.executable).with_name("nada-sweep"))
    start = time.perf_counter()
    done = subprocess.run([exe, "run", str(sweep)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"nada-sweep run (pack {pack}) failed ({done.returncode}):\n{done.stderr[-3000:]}")
    root = folder / "results" / "bench" / "trials"
    trials = sorted(root.glob("*/*"))
    return wall, trials_span(trials), {str(trial.relative_to(root)): final_metrics(trial) for trial in trials}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps per trial")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of each contender")
    parser.add_argument("--domains", type=int, default=8, help="domains of the demo catalog")
    parser.add_argument("--lrs", default="0.05,0.1", help="comma-separated learning rates searched per domain")
    args = parser.parse_args(argv)
    walls: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    spans: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    worst, trials = 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            order = list(CONTENDERS) if round_index % 2 == 0 else list(reversed(CONTENDERS))
            results = {}
            for name in order:
                wall, span, metrics = run_once(Path(tmp) / f"r{round_index}-{CONTENDERS[name]}", args,
                                               CONTENDERS[name])
                walls[name].append(wall)
                spans[name].append(span)
                results[name] = metrics
            alone, packed = results["pack 1"], results["pack 8"]
            assert alone.keys() == packed.keys(), "the two sweeps trained different trials"
            trials = len(alone)
            worst = max([worst, *(abs(alone[t][k] - packed[t][k]) for t in alone for k in alone[t])])
    rows = []
    for name in CONTENDERS:
        wall, span = median(walls[name]), median(spans[name])
        rows.append([name, wall, trials * 3600 / wall, span, trials * 3600 / span])
    ratio_wall = median(walls["pack 1"]) / median(walls["pack 8"])
    ratio_span = median(spans["pack 1"]) / median(spans["pack 8"])
    print_table(f"`nada-sweep run`, {trials} stylespace trials of {args.steps} steps on the tiny models, 2 packs at "
                f"once, medians of {args.rounds} rounds",
                ["contender", "command wall s", "trials/h (command)", "trials span s", "trials/h (span)"], rows)
    print(f"pack 8 / pack 1: {ratio_wall:.2f} by command wall time, {ratio_span:.2f} by the trials' span; "
          f"largest final-metric difference {worst:.2e}")
    assert worst <= 1e-4, f"packed trials differ from the same trials alone by {worst:.2e}"


if __name__ == "__main__":
    main()
