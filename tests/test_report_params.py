"""The report of a sweep that searched parametrizations: best/ contents, params columns, the k-sweep lines."""

from __future__ import annotations

import json

import pytest

from report_helpers import fake_trial, line

from nada_sweep.cli import main
from nada_sweep.report import build_report
from nada_sweep.report.plots import k_sweep_lines
from nada_sweep.report.results import read_sweep
from nada_sweep.report.selection import rank_sweep


def test_best_keeps_a_light_winners_domain_file_and_a_full_winners_generator(tmp_path):
    fake_trial(tmp_path, "sketch", "light", [line(2, clip_direction=0.5)], params="stylespace", trainable=6048)
    fake_trial(tmp_path, "sketch", "full", [line(2, clip_direction=0.1)], trainable=30_000_000)
    fake_trial(tmp_path, "pixel", "full", [line(2, clip_direction=0.3)])
    build_report(tmp_path)
    best = tmp_path / "best"
    assert (best / "sketch" / "domain.pt").read_bytes() == b"offsets of light"
    assert not (best / "sketch" / "generator.pt").exists()
    assert (best / "pixel" / "generator.pt").read_bytes() == b"weights of full"
    assert not (best / "pixel" / "domain.pt").exists()
    selected = json.loads((best / "sketch" / "selected.json").read_text())
    assert selected["params"] == "stylespace" and selected["files"] == ["domain.pt"]
    assert selected["trainable"] == 6048 and selected["base_generator"] == "builtin:tiny"

    assert main(["report", str(tmp_path), "--export-full"]) == 0
    assert (best / "sketch" / "generator.pt").read_bytes() == b"weights of light"
    assert (best / "sketch" / "domain.pt").exists()
    assert json.loads((best / "sketch" / "selected.json").read_text())["files"] == ["domain.pt", "generator.pt"]

    # the full trial overtakes: best/ follows, and the light winner's domain.pt no longer lies there
    fake_trial(tmp_path, "sketch", "full", [line(2, clip_direction=0.1), line(4, clip_direction=0.9)])
    build_report(tmp_path)
    assert (best / "sketch" / "generator.pt").read_bytes() == b"weights of full"
    assert not (best / "sketch" / "domain.pt").exists()
    assert (tmp_path / "trials" / "sketch" / "light" / "domain.pt").exists()  # nothing lost in the trial


def test_the_sweep_files_export_full_setting_applies_unless_the_command_line_says_otherwise(tmp_path):
    fake_trial(tmp_path, "sketch", "light", [line(2)], params="domain_mod")
    (tmp_path / "sweep.resolved.yaml").write_text("name: s\nexport_full: true\n")
    build_report(tmp_path)
    assert (tmp_path / "best" / "sketch" / "generator.pt").exists()
    assert main(["report", str(tmp_path), "--no-export-full"]) == 0
    assert not (tmp_path / "best" / "sketch" / "generator.pt").exists()
    assert (tmp_path / "best" / "sketch" / "domain.pt").exists()


def test_leaderboard_and_gallery_show_params_trained_numbers_and_file_size(tmp_path):
    fake_trial(tmp_path, "sketch", "light", [line(2, clip_direction=0.5)], params="stylespace", trainable=6048)
    fake_trial(tmp_path, "sketch", "full", [line(2, clip_direction=0.1)], trainable=30_000_000)
    index = build_report(tmp_path)
    rows = {row["trial"]: row for row in json.loads((tmp_path / "leaderboard.json").read_text())["trials"]}
    assert rows["light"]["params"] == "stylespace" and rows["light"]["trainable"] == 6048
    assert rows["light"]["file_bytes"] == len(b"offsets of light")
    assert rows["full"]["params"] == "full" and rows["full"]["file_bytes"] == len(b"weights of full")
    best = json.loads((tmp_path / "leaderboard.json").read_text())["best"]
    assert best[0]["params"] == "stylespace" and best[0]["trainable"] == 6048
    header = (tmp_path / "leaderboard.csv").read_text().splitlines()[0].split(",")
    assert {"params", "trainable", "file_bytes"} <= set(header)
    html = index.read_text()
    assert "stylespace · 6,048 trained numbers · domain.pt 16 B" in html
    assert "full · 30,000,000 trained numbers · generator.pt 15 B" in (tmp_path / "domains" / "sketch.html").read_text()


def test_k_sweep_has_one_line_per_parametrization_when_several_are_searched(tmp_path):
    for k in (0, 4):
        fake_trial(tmp_path, "sketch", f"full-{k}", [line(2, clip_direction=0.1 + k / 100)], k=k)
        fake_trial(tmp_path, "sketch", f"ss-{k}", [line(2, clip_direction=0.2 + k / 100)], k=k, lr=0.05,
                   params="stylespace")
    fake_trial(tmp_path, "pixel", "full-0", [line(2)], k=0)
    sweep = read_sweep(tmp_path)
    domains = {d.name: d for d in rank_sweep(sweep.trials, sweep.selection)}
    lines = k_sweep_lines(domains["sketch"], "clip_direction")
    assert lines == {"full lr 0.002": [(0, 0.1), (4, 0.14)], "stylespace lr 0.05": [(0, 0.2), (4, pytest.approx(0.24))]}
    assert list(k_sweep_lines(domains["pixel"], "clip_direction")) == ["lr 0.002"]
