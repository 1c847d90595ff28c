"""Every benchmark in one run: step time (optimised / faithful / official), kernels, sweep throughput.

    python benchmarks/run_all.py [--official /tmp/StyleGAN-nada] [--json results.json]

Prints each table as it finishes and, with --json, writes all numbers to one file.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kernels
import step_time
import sweep_throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", help="checkout prepared by prepare_official.py (optional)")
    parser.add_argument("--reps", default="6", help="timed steps per variant (step_time)")
    parser.add_argument("--sweep-steps", default="60", help="training steps per sweep trial")
    parser.add_argument("--sweep-long-steps", nargs="*", default=["300"],
                        help="further trial lengths at which only the sweep's efficiency is measured")
    parser.add_argument("--loop-threads", default="1", help="torch threads per `adapt` process in the loop")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    started = time.time()
    results = {"machine": {"cpus": torch.get_num_threads(), "platform": platform.platform(),
                           "torch": torch.__version__}}
    results["step_time"] = step_time.main(["--reps", args.reps] + (["--official", args.official] if args.official else []))
    results["kernels"] = kernels.main([])
    results["sweep"] = sweep_throughput.main(["--steps", args.sweep_steps, "--loop-threads", args.loop_threads,
                                              "--long-steps", *args.sweep_long_steps])
    results["total_s"] = time.time() - started
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
