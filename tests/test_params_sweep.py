"""A demo-size sweep searching `params` on real Ray: every file in place, from the trials to best/ and the gallery."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from sweep_helpers import make_sweep, statuses

from nada_sweep import run_files
from nada_sweep.cli import main
from nada_sweep.models.checkpoints import load_generator


@pytest.mark.slow
def test_a_sweep_searching_params_keeps_every_file_in_place(tmp_path, capsys, local_ray):
    path = make_sweep(tmp_path, """\
        - {name: sketch, target: pencil sketch}
        - {name: anime, target: anime painting}
    """, search="params: [full, stylespace]\n  k: [0, 4]")
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert "8/8 trials succeeded" in out
    root = tmp_path / "results" / "tiny"
    found = statuses(root)
    assert len(found) == 8 and {s["status"] for s in found.values()} == {"ok"}
    for domain in ("sketch", "anime"):
        for mode, lr in (("full", 0.002), ("stylespace", 0.05)):
            for k in (0, 4):
                folder = root / "trials" / domain / f"params={mode}_k={k}"
                record = json.loads((folder / run_files.CONFIG).read_text())
                assert record["config"]["params"] == mode and record["config"]["lr"] == lr
                assert isinstance(record["trainable"], int) and record["trainable"] > 0
                assert (folder / run_files.GENERATOR).is_file()
                load_generator(folder / run_files.GENERATOR)  # always a plain generator
                assert (folder / run_files.DOMAIN).is_file() == (mode != "full")

    leaderboard = json.loads((root / "leaderboard.json").read_text())
    rows = {(r["domain"], r["trial"]): r for r in leaderboard["trials"]}
    light, full = rows["sketch", "params=stylespace_k=0"], rows["sketch", "params=full_k=0"]
    assert light["params"] == "stylespace" and full["params"] == "full"
    assert light["trainable"] < full["trainable"] and light["file_bytes"] < full["file_bytes"] / 10
    for best in leaderboard["best"]:
        folder = root / "best" / best["domain"]
        selected = json.loads((folder / "selected.json").read_text())
        if best["params"] == "full":
            assert selected["files"] == ["generator.pt"] and not (folder / "domain.pt").exists()
        else:
            assert selected["files"] == ["domain.pt"] and not (folder / "generator.pt").exists()
            assert (root / "morphs" / f"{best['domain']}.png").is_file()
    for domain in ("sketch", "anime"):
        assert (root / "domains" / domain / "k_sweep.png").is_file()

    # a light trial's domain.pt renders what its folded generator.pt renders
    trial = root / "trials" / "anime" / "params=stylespace_k=4"
    assert main(["generate", str(trial / "generator.pt"), "--n", "4", "--out", str(tmp_path / "g.png"),
                 "--device", "cpu"]) == 0
    assert main(["generate", "--domain", str(trial / "domain.pt"), "--n", "4", "--out", str(tmp_path / "d.png"),
                 "--device", "cpu"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "g.png")), np.asarray(Image.open(tmp_path / "d.png")))

    assert main(["report", str(root), "--export-full"]) == 0
    for best in leaderboard["best"]:
        assert (root / "best" / best["domain"] / "generator.pt").is_file()
