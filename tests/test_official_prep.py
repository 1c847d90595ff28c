"""benchmarks/prepare_official.py on a stand-in checkout: the edits it makes, and the part prompts it reads.

The stand-in files hold only the lines the script looks for (its own search patterns) and our own strings;
nothing of the official code is kept here.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import prepare_official  # noqa: E402

START = prepare_official._W_PLUS_START


def stand_in(root: Path, line_end: str = "\n") -> Path:
    zssgan = root / "ZSSGAN"
    (zssgan / "model").mkdir(parents=True)
    (zssgan / "op").mkdir()
    (zssgan / "utils").mkdir()
    for name in ("fused_act.py", "upfirdn2d.py"):
        (zssgan / "op" / name).write_bytes(line_end.join(
            ["import os", "ext = load(", "    'ext',", "    sources=['a.cpp'],", ")", "x = 1", ""]).encode())
    (zssgan / "model" / "ZSSGAN.py").write_bytes(line_end.join(
        ["device = 'cuda:0'", f"w = {START}.to(device)", ""]).encode())
    (zssgan / "utils" / "text_templates.py").write_text(
        "other = ['not this {}']\npart_templates = [\n    'first {} part',\n    'second {} part',\n]\n")
    return zssgan


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_prepare_removes_cuda_builds_moves_to_cpu_and_unaliases_the_w_plus_start(tmp_path, line_end):
    zssgan = stand_in(tmp_path, line_end)
    changed = prepare_official.prepare(tmp_path)
    assert len(changed) == 3
    model = (zssgan / "model" / "ZSSGAN.py").read_bytes().decode()
    assert model == line_end.join(["device = 'cpu'", f"w = {START}.clone().to(device)", ""])
    op = (zssgan / "op" / "fused_act.py").read_bytes().decode()
    assert "load(" not in op and op.startswith(f"import os{line_end}ext = None") and op.endswith(f"x = 1{line_end}")
    assert prepare_official.prepare(tmp_path) == []  # a second run changes nothing (one .clone(), not two)
    assert (zssgan / "model" / "ZSSGAN.py").read_bytes().decode().count(".clone()") == 1


def test_prepare_refuses_a_checkout_whose_w_plus_start_moved(tmp_path):
    zssgan = stand_in(tmp_path)
    (zssgan / "model" / "ZSSGAN.py").write_text("device = 'cuda:0'\n")
    with pytest.raises(SystemExit, match="start point"):
        prepare_official.prepare(tmp_path)
    with pytest.raises(SystemExit, match="not a StyleGAN-nada checkout"):
        prepare_official.prepare(tmp_path / "elsewhere")


def test_official_part_prompts_are_read_from_the_checkout(tmp_path):
    stand_in(tmp_path)
    assert prepare_official.official_part_prompts(tmp_path) == ["first {} part", "second {} part"]


def test_load_official_refuses_an_unprepared_checkout(tmp_path):
    stand_in(tmp_path)
    with pytest.raises(SystemExit, match="not prepared"):
        prepare_official.load_official(tmp_path, {"ViT-B/32": tmp_path / "clip.pt"})
