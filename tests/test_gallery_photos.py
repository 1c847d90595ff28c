"""`report --photos / --videos`: what lands in the results folder, what the gallery shows, and the refusals.

The browser half (the same gallery in headless Chromium) is in test_gallery_photos_browser.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import media_helpers
import pytest
from media_helpers import other_generator, photo_folder
from report_helpers import fake_trial, line

from nada_sweep.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep_with_photos(tmp_path_factory):
    return media_helpers.sweep_with_photos(tmp_path_factory.mktemp("photos"))


def test_photos_and_videos_land_in_the_results_folder(sweep_with_photos):
    root, latents = sweep_with_photos
    manifest = json.loads((root / "photos" / "manifest.json").read_text())
    assert manifest["names"] == ["face0", "face1", "face2"]
    assert [d["domain"] for d in manifest["domains"]] == ["anime", "sketch"]
    assert manifest["perceptual"] == "clip features (builtin:tiny)"
    for name in ("photos.png", "reconstruction.png", "anime.png", "sketch.png"):
        assert (root / "photos" / name).is_file()
    videos = json.loads((root / "videos" / "manifest.json").read_text())
    assert [(d["domain"], d["file"]) for d in videos["domains"]] == [("anime", "anime.mp4"), ("sketch", "sketch.mp4")]
    html = (root / "index.html").read_text()
    assert html.count('class="row photo"') == 4  # photos, reconstruction, one row per domain
    assert html.count('href="videos/anime.mp4"') == 1 and html.count('href="videos/sketch.mp4"') == 1


def test_videos_up_to_date_are_not_rendered_again(sweep_with_photos, capsys):
    root, _ = sweep_with_photos
    before = (root / "videos" / "anime.mp4").stat().st_mtime_ns
    assert main(["report", str(root), "--videos", "--video-frames", "16"]) == 0
    assert "0 rendered, 2 already up to date" in capsys.readouterr().out
    assert (root / "videos" / "anime.mp4").stat().st_mtime_ns == before


def test_gallery_says_when_a_domain_selection_changed_since(tmp_path, sweep_with_photos):
    root, _ = sweep_with_photos
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(root), str(copy)], check=True)
    fake_trial(copy, "sketch", "zbetter", [line(2, clip_direction=0.99)])  # now the selected trial
    assert main(["report", str(copy)]) == 0  # no --photos: the gallery shows what is on disk
    html = (copy / "index.html").read_text()
    assert "rendered by trial k0; the selected trial is now zbetter" in html
    assert "morph video (of trial k0, no longer selected)" in html
    assert html.count('class="row photo"') == 4


def test_latents_for_another_generator_write_nothing(tmp_path, sweep_with_photos, capsys):
    root, _ = sweep_with_photos
    photos = photo_folder(tmp_path / "photos")
    other_latents = tmp_path / "other.pt"
    assert main(["invert", str(photos), "--generator", str(other_generator(tmp_path / "g32.pt")),
                 "--out", str(other_latents), "--steps", "1", "--clip", "builtin:tiny"]) == 0
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(root), str(copy)], check=True)
    listing = sorted(p.name for p in (copy / "photos").iterdir())
    stamp = (copy / "photos" / "manifest.json").stat().st_mtime_ns
    assert main(["report", str(copy), "--photos", str(other_latents)]) == 2
    err = capsys.readouterr().err
    assert "size 32, n_latent 8" in err and "size 64, n_latent 10" in err and "Traceback" not in err
    assert sorted(p.name for p in (copy / "photos").iterdir()) == listing
    assert (copy / "photos" / "manifest.json").stat().st_mtime_ns == stamp


def test_report_package_still_imports_no_torch():
    code = ("import sys, nada_sweep.report, nada_sweep.report.gallery, nada_sweep.report.media; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_bad_video_frames_are_refused_before_anything_is_written(tmp_path, sweep_with_photos, capsys):
    root, _ = sweep_with_photos
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(root), str(copy)], check=True)
    stamp = (copy / "videos" / "manifest.json").stat().st_mtime_ns
    assert main(["report", str(copy), "--videos", "--video-frames", "1"]) == 2
    assert "--video-frames: 1" in capsys.readouterr().err
    assert (copy / "videos" / "manifest.json").stat().st_mtime_ns == stamp


def test_run_refuses_latents_of_another_generator_before_starting(tmp_path, capsys):
    from pathlib import Path

    photos = photo_folder(tmp_path / "photos")
    latents = tmp_path / "g32_latents.pt"
    assert main(["invert", str(photos), "--generator", str(other_generator(tmp_path / "g32.pt")),
                 "--out", str(latents), "--steps", "1", "--clip", "builtin:tiny"]) == 0
    sweep = Path(__file__).resolve().parents[1] / "sweep.yaml"
    assert main(["run", str(sweep), "--demo", "--photos", str(latents)]) == 2
    err = capsys.readouterr().err
    assert "size 32, n_latent 8" in err and "size 64, n_latent 10" in err
    assert "Traceback" not in err
