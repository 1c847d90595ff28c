"""benchmarks/gpu_smoke.py's pack check on the CPU: its sizes reach the check's process, and a small pack of
tiny trials against the same trials one per process ends PASS with the members' metrics equal to alone."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_pack


def test_pack_sizes_given_on_the_command_line_reach_the_check_process():
    parser = argparse.ArgumentParser()
    gpu_pack.add_arguments(parser)
    given = parser.parse_args(["--pack-px", "0", "--pack-clips", "tiny,ViT-B/16", "--pack-members", "3"])
    passed_on = parser.parse_args(gpu_pack.flags(given))  # what the check's own process parses
    assert gpu_pack.sizes(passed_on, torch.device("cuda")) == gpu_pack.PackSizes(0, ("tiny", "ViT-B/16"), 20, 3)
    assert gpu_pack.sizes(parser.parse_args([]), torch.device("cpu")) == gpu_pack.PackSizes.defaults(
        torch.device("cpu"))


@pytest.mark.slow
def test_pack_check_runs_on_the_cpu():
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_smoke.py"), "--cpu", "--only", "pack",
               "--pack-members", "2", "--pack-steps", "2"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    verdict = next(line for line in done.stdout.splitlines() if line.startswith(("PASS", "FAIL", "SKIP")))
    assert verdict.startswith("PASS pack"), verdict
    assert "2 stylespace trials of 2 steps" in verdict and "as one pack" in verdict
