"""CPU runs let malloc keep freed memory: tensors as large as a batched step's are not zero-filled anew each step."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap

import pytest

from nada_sweep.adapt import run

# Four 40 MiB tensors alive at once, then freed, as a step's activations are: past malloc's mmap threshold (at
# most 32 MiB). Run in a fresh interpreter: malloc's state in this test process depends on every earlier test.
_CHURN = textwrap.dedent("""\
    import json, resource, sys, torch
    from nada_sweep import devices
    if sys.argv[1] == "reuse":
        assert devices.reuse_freed_memory()
    def faults():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        tensors = [torch.ones(10 * 2**20) for _ in range(4)]
        del tensors
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps([faults() for _ in range(8)]))
""")
PAGES = 4 * 40 * 2**20 // resource.getpagesize()


def _faults(mode: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_reused_without_new_page_faults():
    assert min(_faults("default")) > PAGES // 2  # every round: fresh mappings, zero-filled by the kernel
    assert max(_faults("reuse")[-3:]) < PAGES // 10  # once the heap has grown: its pages again


def test_every_cpu_run_asks_for_it(tiny_config, tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(run, "reuse_freed_memory", lambda: asked.append(True) or True)
    run.run_adaptation(tiny_config.model_copy(update={"steps": 1, "eval_every": 1}), tmp_path / "run")
    assert asked == [True]
