"""Sweep throughput: `nada-sweep run` on a tiny sweep against a shell loop of `nada-sweep adapt`, one per trial.

    python benchmarks/sweep_throughput.py [--steps 100] [--loop-threads 2] [--long-steps 300 ...]

The sweep: 8 domains x k in {0, 4} = 16 trials on the built-in tiny models (64 px generator, tiny CLIP),
`resources: {cpus: 1}`, so Ray runs one trial per core. The loop runs the same 16 trials one after another,
the way StyleGAN-NADA is run today (one process per trial), each process with --loop-threads torch threads.
Printed: wall time of each and their ratio (throughput = loop wall / sweep wall); efficiency = summed
in-trial compute (each trial's elapsed_s: its training steps and evaluations) / (wall x workers); peak memory
of each worker process (RSS, polled); overhead per trial (Tune's time_total_s minus the trial's elapsed_s:
process start, model loading, evaluation set-up, the frozen bank, reporting). --long-steps runs the sweep
again (no loop) at longer trials: the command's fixed cost (Ray start-up, report) weighs less there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, print_table

DOMAINS = {
    "sketch": "pencil sketch", "anime": "anime painting", "pixar": "3D render in the style of Pixar",
    "cubism": "cubism painting", "zombie": "zombie", "elf": "Tolkien elf", "mona_lisa": "Mona Lisa painting",
    "werewolf": "werewolf",
}
K_VALUES = (0, 4)
WORKERS = 2


def write_sweep(folder: Path, steps: int) -> Path:
    catalog = folder / "catalog.yaml"
    catalog.write_text("domains:\n" + "".join(
        f"  - {{name: {name}, source: photo, target: {target}}}\n" for name, target in DOMAINS.items()))
    sweep = folder / "sweep.yaml"
    sweep.write_text(
        "name: bench\ngenerator: builtin:tiny\nclip: [builtin:tiny]\neval_clip: builtin:tiny\n"
        f"catalog: {catalog.name}\n"
        f"train: {{steps: {steps}, eval_every: {steps // 2}, n_eval: 4, n_samples: 4}}\n"
        f"search:\n  k: {list(K_VALUES)}\n"
        "resources: {cpus: 1, gpus: 0}\n"
    )
    return sweep


def loop_script(folder: Path, steps: int) -> Path:
    """The shell loop people run: one `nada-sweep adapt` per (domain, k)."""
    exe = Path(sys.executable).with_name("nada-sweep")
    lines = ["set -e"]
    for name, target in DOMAINS.items():
        for k in K_VALUES:
            lines.append(
                f"{exe} adapt --generator builtin:tiny --clip builtin:tiny --eval-clip builtin:tiny "
                f"--source photo --target '{target}' --k {k} --steps {steps} --eval-every {steps // 2} "
                f"--n-eval 4 --n-samples 4 --out {folder}/loop/{name}/k{k} >/dev/null"
            )
    script = folder / "loop.sh"
    script.write_text("\n".join(lines) + "\n")
    return script


def _process_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command line, RSS in MiB), read from /proc (Linux)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat[stat.rindex(")") + 2:].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            rss_kib = next(int(line.split()[1]) for line in (entry / "status").read_text().splitlines()
                           if line.startswith("VmRSS:"))
        except (OSError, ValueError, StopIteration):
            continue  # gone, or a kernel thread without memory
        table[int(entry.name)] = (parent, command[:80], rss_kib / 1024)
    return table


class PeakMemory:
    """Polls a process tree and keeps each process's largest RSS (MiB) and its command line."""

    def __init__(self, pid: int) -> None:
        self.root = pid
        self.peaks: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            table = _process_table()
            tree, frontier = {self.root}, [self.root]
            while frontier:  # descendants of the root
                parent = frontier.pop()
                children = [pid for pid, (ppid, _, _) in table.items() if ppid == parent and pid not in tree]
                tree.update(children)
                frontier.extend(children)
            for pid in tree & table.keys():
                _, label, rss = table[pid]
                old = self.peaks.get(pid, ("", 0.0))
                self.peaks[pid] = (label or old[0], max(rss, old[1]))
            self._stop.wait(0.25)

    def stop(self) -> dict[int, tuple[str, float]]:
        self._stop.set()
        self._thread.join()
        return self.peaks


def timed(command: list[str], env: dict[str, str]) -> tuple[float, dict[int, tuple[str, float]], int]:
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    memory = PeakMemory(process.pid)
    _, err = process.communicate()
    wall = time.perf_counter() - start
    if process.returncode:
        print(err[-3000:], file=sys.stderr)
    return wall, memory.stop(), process.returncode


def elapsed(run_dir: Path) -> float:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["elapsed_s"]


def tune_trials(storage: Path) -> list[tuple[float, float, float]]:
    """(start, end, overhead) per trial from Tune's result.json; overhead = time_total_s minus our elapsed_s."""
    rows = []
    for result in storage.rglob("result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if lines:
            last = lines[-1]
            start = last["timestamp"] - last["time_total_s"]
            rows.append((start, last["timestamp"], last["time_total_s"] - last["elapsed_s"]))
    return sorted(rows)


def measure_sweep(folder: Path, steps: int, env: dict[str, str]) -> dict:
    """Run the tiny sweep at `steps` steps per trial in `folder`; its wall time, efficiency and overheads."""
    folder.mkdir(parents=True, exist_ok=True)
    sweep = write_sweep(folder, steps)
    started = time.time()
    wall, memory, rc = timed([str(Path(sys.executable).with_name("nada-sweep")), "run", str(sweep)], env)
    if rc:
        raise SystemExit(f"nada-sweep run failed ({rc})")
    trials = sorted((folder / "results" / "bench" / "trials").glob("*/*"))
    compute = sum(elapsed(t) for t in trials)
    tune_rows = tune_trials(folder / "results" / "bench" / "tune")
    overheads = [overhead for _, _, overhead in tune_rows]
    first_start = min(start for start, _, _ in tune_rows)
    last_end = max(end for _, end, _ in tune_rows)
    workers = [mib for label, mib in memory.values() if "ray::" in label and "IDLE" not in label]
    return {
        "steps": steps, "trials": len(trials), "wall_s": wall, "compute_s": compute,
        "efficiency": compute / (wall * WORKERS),
        "worker_peak_mib": max(workers) if workers else None,
        "overhead_first_s": overheads[0] if overheads else None,
        "overhead_rest_median_s": median(overheads[1:]) if len(overheads) > 1 else None,
        # the fixed costs: CLI + Ray + Tune + first worker start; report + shutdown
        "startup_s": first_start - started,
        "finish_s": started + wall - last_end,
        "trials_phase_efficiency": compute / ((last_end - first_start) * WORKERS),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="training steps per trial")
    parser.add_argument("--loop-threads", type=int, default=os.cpu_count(),
                        help="torch threads of each `adapt` process in the loop (default: all cores, as people run it)")
    parser.add_argument("--long-steps", type=int, nargs="*", default=[],
                        help="also run the sweep (without the loop) at these trial lengths, for efficiency")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="nada-sweep-bench-"))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    sweep = measure_sweep(work / f"steps{args.steps}", args.steps, env)
    script = loop_script(work, args.steps)
    loop_wall, loop_mem, rc = timed(["bash", str(script)], {**env, "OMP_NUM_THREADS": str(args.loop_threads)})
    if rc:
        raise SystemExit(f"the adapt loop failed ({rc})")
    loop_runs = sorted((work / "loop").glob("*/*"))
    loop_compute = sum(elapsed(t) for t in loop_runs)
    adapt_peaks = [mib for label, mib in loop_mem.values() if " adapt " in label]
    longer = [measure_sweep(work / f"steps{steps}", steps, env) for steps in args.long_steps]

    result = {
        **{f"sweep_{key}": value for key, value in sweep.items()},
        "loop_wall_s": loop_wall, "throughput_ratio": loop_wall / sweep["wall_s"],
        "loop_compute_s": loop_compute, "loop_efficiency": loop_compute / loop_wall,
        "adapt_peak_mib": max(adapt_peaks) if adapt_peaks else None,
        "loop_overhead_per_trial_s": (loop_wall - loop_compute) / len(loop_runs),
        "longer": longer,
    }
    print_table(
        f"sweep throughput: {sweep['trials']} trials x {args.steps} steps (built-in tiny models), {WORKERS} cores",
        ["", "nada-sweep run", f"adapt loop ({args.loop_threads} thr)", "ratio"],
        [
            ["wall, s", sweep["wall_s"], loop_wall, f"{result['throughput_ratio']:.2f}x"],
            ["summed in-trial compute, s", sweep["compute_s"], loop_compute, ""],
            ["efficiency (compute / wall x workers)", sweep["efficiency"], result["loop_efficiency"], ""],
            ["  same, first trial start to last trial end", sweep["trials_phase_efficiency"], "", ""],
            ["  start-up before the first trial, s", sweep["startup_s"], "", ""],
            ["  after the last trial (report, shutdown), s", sweep["finish_s"], "", ""],
            ["peak memory per worker, MiB", sweep["worker_peak_mib"], result["adapt_peak_mib"], ""],
            ["overhead, first trial, s", sweep["overhead_first_s"], "", ""],
            ["overhead per trial after the first, s", sweep["overhead_rest_median_s"],
             result["loop_overhead_per_trial_s"], ""],
        ],
    )
    if longer:
        runs = [sweep, *longer]
        print_table(
            "sweep efficiency against trial length (same 16 trials)",
            ["steps per trial", "wall, s", "compute, s", "efficiency", "first to last trial", "start-up, s",
             "after last trial, s"],
            [[r["steps"], r["wall_s"], r["compute_s"], r["efficiency"], r["trials_phase_efficiency"], r["startup_s"],
              r["finish_s"]] for r in runs],
        )
    return result


if __name__ == "__main__":
    main()
