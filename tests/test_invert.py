"""`nada-sweep invert`: photos into W+, the latents file, its generator check, and the refusals."""

from __future__ import annotations

import pytest
import torch
from media_helpers import other_generator, photo_folder, tiny_images
from PIL import Image

from nada_sweep.cli import main
from nada_sweep.errors import UserError
from nada_sweep.media import perceptual
from nada_sweep.media.invert import invert, learning_rate, noise_penalty
from nada_sweep.media.latents import check_generator, load_latents, render_latents
from nada_sweep.media.photos import Photo, read_photos
from nada_sweep.media.settings import InvertSettings
from nada_sweep.models.checkpoints import load_generator

CPU = torch.device("cpu")
# Measured on the tiny generator (3 seeds of 2 images, CLIP-feature term): the mean-w start is at MSE 0.44-0.50,
# after 80 steps 0.04-0.06. The bound leaves room for a different machine's float rounding, and is 4x below the start.
MSE_BOUND = 0.1


@pytest.mark.slow
def test_inversion_reconstructs_an_image_the_generator_made():
    loaded = load_generator("builtin:tiny")
    targets = tiny_images(2)
    photos = [Photo(f"p{i}", image) for i, image in enumerate(targets)]
    term = perceptual.choose_perceptual("clip", "builtin:tiny", CPU)
    seen = []
    latents = invert(loaded, photos, term, InvertSettings(steps=80, batch=2), lambda done, losses: seen.append(losses))
    assert len(seen) == 80 and seen[0]["mse"] > 0.3  # it started far away
    assert max(latents.mse) < MSE_BOUND, latents.mse
    assert latents.latents.shape == (2, loaded.generator.n_latent, loaded.generator.style_dim)
    # the stored codes and noise render what the optimisation reached
    again = render_latents(loaded.generator, latents)
    assert (again - targets).pow(2).flatten(1).mean(1).max().item() < MSE_BOUND
    assert latents.perceptual == "clip features (builtin:tiny)"


def test_learning_rate_ramps_up_and_down():
    settings = InvertSettings(steps=100)
    values = [learning_rate(i / 100, settings) for i in range(100)]
    assert values[0] == 0 and max(values) == pytest.approx(settings.lr)
    assert values[2] < values[4] < values[5] and values[80] > values[90] > values[99] > 0


def test_noise_penalty_punishes_structure_not_white_noise():
    seeded = torch.Generator().manual_seed(0)
    white = [torch.randn(1, 1, 32, 32, generator=seeded)]
    smooth = [torch.nn.functional.interpolate(torch.randn(1, 1, 4, 4, generator=seeded), size=32, mode="bilinear")]
    assert noise_penalty(white).item() < 0.01 < noise_penalty(smooth).item()


def test_invert_command_writes_latents_and_reconstructions(tmp_path, capsys):
    photos = photo_folder(tmp_path / "photos")
    out = tmp_path / "latents.pt"
    assert main(["invert", str(photos), "--generator", "builtin:tiny", "--out", str(out), "--steps", "3",
                 "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "perceptual term: clip features (builtin:tiny)" in text  # no LPIPS weights on this machine
    latents = load_latents(out)
    assert latents.names == ["face0", "face1"]
    assert latents.generator | {"path": None} == {"path": None, "size": 64, "n_latent": 10, "style_dim": 64,
                                                  "random_weights": True}
    recon = tmp_path / "latents_reconstructions"
    assert sorted(p.name for p in recon.iterdir()) == ["compare.png", "face0.png", "face1.png"]
    assert Image.open(recon / "face0.png").size == (64, 64)

    grid = tmp_path / "grid.png"
    assert main(["generate", "builtin:tiny", "--latents", str(out), "--out", str(grid)]) == 0
    assert Image.open(grid).size == (2 + 2 * 66, 68)  # the two photos' codes in one row, 2 px padding

    # once written, the latents file is not replaced without --overwrite
    before = out.stat().st_mtime_ns
    assert main(["invert", str(photos), "--generator", "builtin:tiny", "--out", str(out), "--steps", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.stat().st_mtime_ns == before


def test_photos_are_centre_cropped_and_resized(tmp_path):
    wide = Image.new("RGB", (300, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (100, 0, 200, 100))  # a blue centre square between red sides
    wide.save(tmp_path / "wide.jpg")
    [photo] = read_photos(tmp_path, 64)
    assert photo.image.shape == (3, 64, 64)
    assert photo.image[2].mean() > 0.9 and photo.image[0].mean() < -0.9  # only the blue centre is left


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d.mkdir(), "holds no files"),
        (lambda d: (photo_folder(d), (d / "notes.txt").write_text("not a photo")), "notes.txt"),
        (lambda d: None, "does not exist"),
        (lambda d: (photo_folder(d), Image.new("RGB", (8, 8)).save(d / "face0.jpg")), "share the name face0"),
    ],
)
def test_bad_photo_folders_are_refused(tmp_path, capsys, setup, message):
    photos = tmp_path / "photos"
    setup(photos)
    out = tmp_path / "latents.pt"
    assert main(["invert", str(photos), "--generator", "builtin:tiny", "--out", str(out), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "latents_reconstructions").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "--steps: 0"),
        (["--lr-rampup", "0"], "--lr-rampup: 0.0"),
        (["--mse", "0", "--perceptual-weight", "0"], "both 0"),
        (["--out", "latents.npz"], "*.pt"),
        (["--perceptual", "lpips"], "LPIPS cannot run"),
        (["--clip", "ViT-Nope/1"], "ViT-Nope/1"),
    ],
)
def test_bad_invert_options_are_refused(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # certainly no LPIPS weights there
    monkeypatch.chdir(tmp_path)
    photos = photo_folder(tmp_path / "photos")
    argv = ["invert", str(photos), "--generator", "builtin:tiny", "--out", str(tmp_path / "l.pt"), "--steps", "1"]
    assert main([*argv, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*_reconstructions"))


def test_latents_for_another_generator_are_refused(tmp_path, capsys):
    photos = photo_folder(tmp_path / "photos")
    out = tmp_path / "latents.pt"
    assert main(["invert", str(photos), "--generator", "builtin:tiny", "--out", str(out), "--steps", "1"]) == 0
    other = other_generator(tmp_path / "other.pt")
    grid = tmp_path / "grid.png"
    assert main(["generate", str(other), "--latents", str(out), "--out", str(grid)]) == 2
    err = capsys.readouterr().err
    assert "size 64, n_latent 10, style_dim 64" in err and "size 32, n_latent 8, style_dim 32" in err
    assert not grid.exists()
    with pytest.raises(UserError, match="other.pt"):
        check_generator(load_latents(out), load_generator(other).generator, str(other))


@pytest.mark.parametrize("content", [b"", b"garbage", None])
def test_files_that_are_not_latents_are_refused(tmp_path, capsys, content):
    path = tmp_path / "latents.pt"
    if content is None:
        torch.save({"g_ema": {}}, path)  # a generator checkpoint, not a latents file
    else:
        path.write_bytes(content)
    assert main(["generate", "builtin:tiny", "--latents", str(path), "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert "latents.pt" in err and "Traceback" not in err and not (tmp_path / "g.png").exists()


def test_lpips_runs_when_its_weights_are_local(tmp_path, monkeypatch):
    """The LPIPS path with a (random) SqueezeNet trunk placed where torchvision looks: nothing is downloaded."""
    from torchvision.models import squeezenet1_1

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert perceptual.lpips_missing("squeeze") is not None
    file = perceptual.lpips_weights_file("squeeze")
    file.parent.mkdir(parents=True)
    torch.save(squeezenet1_1().state_dict(), file)
    assert perceptual.lpips_missing("squeeze") is None
    term = perceptual.choose_perceptual("auto", "builtin:tiny", CPU, net="squeeze")
    assert term.name == "lpips (squeeze)"
    a, b = tiny_images(2)
    same, different = term.distance(a[None], a[None]).item(), term.distance(a[None], b[None]).item()
    assert same == pytest.approx(0, abs=1e-6) and different > 0
    latents = invert(load_generator("builtin:tiny"), [Photo("a", a)], term, InvertSettings(steps=2))
    assert latents.perceptual == "lpips (squeeze)"


def test_missing_lpips_package_falls_back_and_says_why(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lpips", None)
    assert "not installed" in perceptual.lpips_missing()
    term = perceptual.choose_perceptual("auto", "builtin:tiny", CPU)
    assert term.name == "clip features (builtin:tiny)" and "lpips package is not installed" in term.why
    with pytest.raises(UserError, match="lpips package is not installed"):
        perceptual.choose_perceptual("lpips", "builtin:tiny", CPU)
