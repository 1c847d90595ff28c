"""`nada-sweep video`: walk and morph frames, the files they become, and the refusals."""

from __future__ import annotations

import sys

import imageio_ffmpeg
import pytest
import torch
from PIL import Image

from nada_sweep.cli import main
from nada_sweep.media import encode
from nada_sweep.media.settings import VideoSettings
from nada_sweep.media.video import WeightMorph, morph_frames, walk_frames, walk_latents
from nada_sweep.models.checkpoints import load_generator, save_generator
from nada_sweep.sampling import fixed_latents, render


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """A generator 'adapted' from builtin:tiny: the same architecture with every weight nudged."""
    g = load_generator("builtin:tiny").generator
    seeded = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in g.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=seeded))
    path = tmp_path_factory.mktemp("adapted") / "generator.pt"
    save_generator(path, g, metadata={"random_weights": True})
    return path


def decoded(path):
    """(frame count, (width, height)) as ffmpeg decodes the file."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return sum(1 for _ in reader), tuple(meta["size"])


def test_16_frame_walk_mp4_decodes(tmp_path, adapted, capsys):
    out = tmp_path / "walk.mp4"
    assert main(["video", "walk", "builtin:tiny", str(adapted), "--frames", "16", "--keyframes", "3",
                 "--out", str(out), "--device", "cpu"]) == 0
    assert decoded(out) == (16, (2 * 64, 64))  # source and adapted side by side
    assert "16 frames" in capsys.readouterr().out


def test_16_frame_morph_without_ffmpeg_is_animated_webp(tmp_path, adapted, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if the package were not installed
    assert "imageio-ffmpeg package is not installed" in encode.ffmpeg_missing()
    monkeypatch.chdir(tmp_path)
    assert main(["video", "morph", "builtin:tiny", str(adapted), "--frames", "16", "--samples", "3"]) == 0
    with Image.open(tmp_path / "morph.webp") as video:  # the default name when ffmpeg is missing
        assert (video.n_frames, video.size, video.is_animated) == (16, (3 * 64, 64), True)
    # an explicit .mp4 is refused with the reason, and nothing is written
    assert main(["video", "morph", "builtin:tiny", str(adapted), "--frames", "16", "--out", "m.mp4"]) == 2
    assert not (tmp_path / "m.mp4").exists()


def test_gif_output(tmp_path, adapted):
    out = tmp_path / "morph.gif"
    assert main(["video", "morph", "builtin:tiny", str(adapted), "--frames", "4", "--samples", "1",
                 "--out", str(out)]) == 0
    with Image.open(out) as video:
        assert (video.n_frames, video.size) == (4, (64, 64))


def test_morph_runs_from_the_source_to_the_domain(adapted):
    source = load_generator("builtin:tiny").generator
    target = load_generator(adapted).generator
    w = fixed_latents(source, 2, 0, 0.7)
    frames = list(morph_frames(WeightMorph(source, target), w, 5))
    expected_first = walk_frame(source, w)
    expected_last = walk_frame(target, w)
    assert len(frames) == 5 and frames[0].shape == (64, 128, 3)
    assert abs(frames[0].astype(int) - expected_first).max() <= 1
    assert abs(frames[-1].astype(int) - expected_last).max() <= 1
    assert abs(frames[2].astype(int) - expected_first).mean() > 1  # the middle is neither end


def walk_frame(generator, w):
    from nada_sweep.images import grid_array

    return grid_array(render(generator, w), padding=0).astype(int)


def test_walk_loops_through_its_keyframes():
    g = load_generator("builtin:tiny").generator
    settings = VideoSettings(frames=12, keyframes=3)
    w = walk_latents(g, settings)
    keys = fixed_latents(g, 3, settings.seed, settings.truncation)
    assert w.shape == (12, g.style_dim)
    assert torch.allclose(w[0], keys[0]) and torch.allclose(w[4], keys[1]) and torch.allclose(w[8], keys[2])
    frames = list(walk_frames([g, g], w[:2]))
    assert frames[0].shape == (64, 128, 3) and (frames[0][:, :64] == frames[0][:, 64:]).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frames", "1"], "--frames: 1"),
        (["--fps", "0"], "--fps: 0"),
        (["--fps", "500"], "--fps: 500"),
        (["--truncation", "1.5"], "--truncation: 1.5"),
        (["--samples", "0"], "--samples: 0"),
        (["--out", "video.avi"], "unknown video type '.avi'"),
    ],
)
def test_bad_video_options_are_refused(tmp_path, capsys, adapted, args, message):
    argv = ["video", "morph", "builtin:tiny", str(adapted), "--out", str(tmp_path / "v.mp4"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_walk_refusals(tmp_path, capsys, adapted):
    assert main(["video", "walk", "builtin:tiny", "--frames", "4", "--keyframes", "5",
                 "--out", str(tmp_path / "w.mp4")]) == 2
    assert "--keyframes: 5" in capsys.readouterr().err
    assert main(["video", "walk", "--out", str(tmp_path / "w.mp4")]) == 2
    assert "give one or more generator files" in capsys.readouterr().err
    existing = tmp_path / "kept.mp4"
    existing.write_bytes(b"precious")
    assert main(["video", "walk", "builtin:tiny", "--frames", "4", "--out", str(existing)]) == 2
    assert "--overwrite" in capsys.readouterr().err and existing.read_bytes() == b"precious"


def test_morph_between_different_architectures_is_refused(tmp_path, capsys):
    from media_helpers import other_generator

    other = other_generator(tmp_path / "other.pt")
    assert main(["video", "morph", "builtin:tiny", str(other), "--frames", "4",
                 "--out", str(tmp_path / "m.webp")]) == 2
    assert "different architectures" in capsys.readouterr().err and not (tmp_path / "m.webp").exists()
