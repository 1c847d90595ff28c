"""NVIDIA StyleGAN2-ADA .pkl generators: read without running code, converted to rosinality's layout exactly.

Fixtures are written by tests/sg2ada_format.py in the pickle format of NVlabs/stylegan2-ada-pytorch, with random
weights, and rendered there by an independent implementation of its synthesis network in NVIDIA's conventions.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import sg2ada_format as fmt
import torch
from PIL import Image

from nada_sweep.cli import main
from nada_sweep.sweep.load import load_sweep
from nada_sweep.errors import UserError
from nada_sweep.models.checkpoints import load_generator, save_generator

CONFIGS = {
    # stylegan2-ada-pytorch's configs differ in mapping depth and channel_base / channel_max (scaled down here)
    "config-f": dict(resolution=32, mapping_layers=8, channel_base=512, channel_max=32),
    "paper256": dict(resolution=64, mapping_layers=8, channel_base=256, channel_max=32),
    "auto": dict(resolution=16, mapping_layers=2, channel_base=256, channel_max=16),
    "lr-mul-0.1-no-noise-8px": dict(resolution=8, mapping_layers=3, channel_base=64, channel_max=16,
                                    lr_multiplier=0.1, use_noise=False, conv_clamp=None),
}


def write_snapshot(folder: Path, name: str = "network.pkl", **kwargs) -> tuple[Path, fmt.Record]:
    g = fmt.build_generator(**kwargs)
    return fmt.write_pickle(folder / name, fmt.snapshot(g)), g


def render_converted(path: Path, z: torch.Tensor, psi: float) -> torch.Tensor:
    loaded = load_generator(path)
    with torch.no_grad():
        image, _ = loaded.generator([z], truncation=psi, truncation_latent=loaded.latent_avg[None],
                                    randomize_noise=False)
    return image


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("psi", [1.0, 0.6])
def test_converted_generator_renders_the_same_image(tmp_path, config, psi):
    path, g = write_snapshot(tmp_path, **config)
    z = torch.randn(3, g.attrs["z_dim"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = fmt.render(g, z, psi)
    image = render_converted(path, z, psi)
    assert image.shape == (3, 3, config["resolution"], config["resolution"])
    assert expected.std() > 0.1  # a real image, not a constant that any mapping would match
    assert (image - expected).abs().max() < 1e-3


def test_architecture_and_truncation_centre_come_from_the_file(tmp_path):
    path, g = write_snapshot(tmp_path, **CONFIGS["paper256"])
    loaded = load_generator(path)
    assert loaded.spec.size == 64 and loaded.spec.n_mlp == 8 and loaded.spec.style_dim == 32
    assert loaded.spec.channels == {4: 32, 8: 32, 16: 16, 32: 8, 64: 4}  # min(channel_base / res, channel_max)
    assert loaded.generator.n_latent == g.attrs["num_ws"]
    assert torch.equal(loaded.latent_avg, g.children["mapping"].buffers["w_avg"])


def test_convert_writes_a_rosinality_file_that_renders_the_same(tmp_path, capsys):
    path, _ = write_snapshot(tmp_path, **CONFIGS["config-f"])
    out = tmp_path / "converted.pt"
    assert main(["convert", str(path), str(out)]) == 0
    assert "latent_avg" in capsys.readouterr().out
    data = torch.load(out, weights_only=True)  # plain data: any rosinality-format reader loads it
    assert {"g_ema", "latent_avg"} <= set(data)
    assert "style.8.weight" in data["g_ema"] and "convs.4.conv.blur.kernel" in data["g_ema"]
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(2))
    assert torch.equal(render_converted(out, z, 0.7), render_converted(path, z, 0.7))


def test_convert_never_overwrites_without_asking(tmp_path, capsys):
    path, _ = write_snapshot(tmp_path, **CONFIGS["auto"])
    out = tmp_path / "out.pt"
    out.write_bytes(b"keep me")
    assert main(["convert", str(path), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main(["convert", str(path), str(tmp_path / "out.pkl")]) == 2
    assert "name it .pt" in capsys.readouterr().err and not (tmp_path / "out.pkl").exists()
    assert main(["convert", str(path), str(out), "--overwrite"]) == 0
    assert load_generator(out).spec.size == 16


def test_a_pkl_named_torch_archive_reads_as_one(tmp_path):
    loaded = load_generator("builtin:tiny")
    save_generator(tmp_path / "g.pkl", loaded.generator)
    assert load_generator(tmp_path / "g.pkl").spec == loaded.spec


def test_generate_and_a_sweep_take_a_pkl(tmp_path):
    path, _ = write_snapshot(tmp_path, **CONFIGS["auto"])
    grid = tmp_path / "grid.png"
    assert main(["generate", str(path), "--n", "4", "--truncation", "0.7", "--out", str(grid)]) == 0
    assert Image.open(grid).size[0] > 2 * 16
    (tmp_path / "catalog.yaml").write_text("source: photo\ndomains:\n  - {name: sketch, target: sketch}\n")
    (tmp_path / "sweep.yaml").write_text(
        "name: t\ngenerator: network.pkl\nclip: [builtin:tiny]\ncatalog: catalog.yaml\ntrain: {steps: 2}\n")
    sweep = load_sweep(tmp_path / "sweep.yaml")
    assert sweep.generator == str(path) and sweep.generator_size == 16 and sweep.n_latent == 6


@pytest.mark.slow
def test_adapt_trains_a_pkl_generator(tmp_path):
    path, _ = write_snapshot(tmp_path, **CONFIGS["auto"])
    out = tmp_path / "run"
    assert main(["adapt", "--generator", str(path), "--clip", "builtin:tiny", "--source", "photo",
                 "--target", "sketch", "--device", "cpu", "--steps", "2", "--eval-every", "2", "--n-eval", "2",
                 "--n-samples", "2", "--out", str(out)]) == 0
    adapted = torch.load(out / "generator.pt", weights_only=True)
    assert adapted["g_ema"]["input.input"].shape == (1, 16, 4, 4)


# ---- code in the file never runs --------------------------------------------------------------------------


class RunsAShellCommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, capsys):
    marker = tmp_path / "marker"
    g = fmt.build_generator(**CONFIGS["auto"])
    snapshot = {**fmt.snapshot(g), "extra": RunsAShellCommand(f"touch {marker}")}
    path = fmt.write_pickle(tmp_path / "evil.pkl", snapshot)
    assert main(["convert", str(path), str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err
    assert "wants to run code" in err and "system" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "out.pt").exists()
    with fmt.nvidia_names(reconstruct=dict):
        pickle.loads(path.read_bytes())  # the control: an ordinary unpickler runs the command
    assert marker.exists()


def test_embedded_source_is_read_as_text_never_executed(tmp_path):
    marker = tmp_path / "marker"
    source = f"open({str(marker)!r}, 'w').close()\n"
    path, g = write_snapshot(tmp_path, module_src=source, **CONFIGS["auto"])
    z = torch.randn(1, 32)
    assert (render_converted(path, z, 1.0) - fmt.render(g, z)).abs().max() < 1e-3
    assert not marker.exists()

    def like_nvidia(meta):  # the control: NVIDIA's loader executes the source of each record's module
        exec(meta["module_src"], {})

    with fmt.nvidia_names(reconstruct=like_nvidia):
        pickle.loads(path.read_bytes())
    assert marker.exists()


# ---- bad input: one clear message -------------------------------------------------------------------------


def _truncated(folder: Path) -> Path:
    path, _ = write_snapshot(folder, **CONFIGS["auto"])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _dumped(folder: Path, value) -> Path:
    return fmt.write_pickle(folder / "network.pkl", value)


def _tf_pickle(folder: Path) -> Path:
    # what a TensorFlow-era StyleGAN2 pickle opens with: a dnnlib.tflib Network object (GLOBAL, NEWOBJ, BUILD)
    return _write(folder / "network.pkl", b"\x80\x02cdnnlib.tflib.network\nNetwork\n)\x81}b.")


BAD = {
    "not-a-generator": (lambda d: _dumped(d, {"weights": [1.0, 2.0]}), "expected a dict with 'G_ema'"),
    "discriminator-as-g-ema": (lambda d: _dumped(d, {"G_ema": fmt.snapshot(fmt.build_generator())["D"]}),
                               "'Discriminator', not a StyleGAN2-ADA Generator"),
    "conditional": (lambda d: _dumped(d, {"G_ema": _with_attr(fmt.build_generator(), c_dim=10)}),
                    "class-conditional"),
    "resnet-synthesis": (lambda d: _dumped(d, {"G_ema": _resnet(fmt.build_generator(resolution=8))}),
                         "architecture 'resnet'"),
    "truncated": (_truncated, "truncated or corrupt"),
    "text-file": (lambda d: _write(d / "network.pkl", b"hello, not a pickle\n"),
                  "starts with the text 'hello, not a pickle'"),
    "empty": (lambda d: _write(d / "network.pkl", b""), "file is empty"),
    "stylegan3": (lambda d: _dumped(d, {"G_ema": fmt.stylegan3_like()}), "StyleGAN3 generator"),
    "stylegan-xl": (lambda d: _dumped(d, {"G_ema": fmt.stylegan_xl_like()}), "StyleGAN-XL generator"),
    "tensorflow": (_tf_pickle, "TensorFlow StyleGAN"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _with_attr(record: fmt.Record, **attrs) -> fmt.Record:
    record.attrs.update(attrs)
    return record


def _resnet(g: fmt.Record) -> fmt.Record:
    g.children["synthesis"].children["b8"].attrs["architecture"] = "resnet"
    return g


@pytest.mark.parametrize("make, message", BAD.values(), ids=BAD.keys())
def test_bad_pickles_are_one_clear_message(tmp_path, capsys, make, message):
    path = make(tmp_path)
    out = tmp_path / "out.pt"
    assert main(["convert", str(path), str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "Traceback" not in err
    assert not out.exists()
    with pytest.raises(UserError, match=message):
        load_generator(path)
