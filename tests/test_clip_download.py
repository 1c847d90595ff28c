"""CLIP weights download themselves once, before training, through clip's own download; offline keeps the refusal.

Everything runs against a file server on 127.0.0.1 serving a tiny CLIP file: the URL table is pointed at it.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from nada_sweep.cli import main
from nada_sweep.errors import UserError
from nada_sweep.models import clip_models
from nada_sweep.models.clip_models import OFFLINE_ENV, build_tiny_clip, ensure_downloaded, load_clip, save_clip

WRONG_SHA = "0" * 64


class FileServer:
    def __init__(self, root: Path):
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def tiny_clip_file(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("served")
    staged = folder / "tiny.pt"
    save_clip(build_tiny_clip(seed=3), staged)
    sha = hashlib.sha256(staged.read_bytes()).hexdigest()
    for digest in (sha, WRONG_SHA):  # clip's URLs are <sha256>/<file>; the second one lies about the file
        (folder / digest).mkdir()
        (folder / digest / "tiny-clip.pt").write_bytes(staged.read_bytes())
    return folder, sha


@pytest.fixture
def server(tiny_clip_file, monkeypatch):
    folder, sha = tiny_clip_file
    served = FileServer(folder)
    monkeypatch.delenv(OFFLINE_ENV, raising=False)
    monkeypatch.setitem(clip_models.CLIP_URLS, "RN50", served.url(f"{sha}/tiny-clip.pt"))
    yield served
    served.close()


def test_a_missing_model_is_downloaded_once_and_then_loads(server, tmp_path, capsys):
    root = tmp_path / "cache"
    assert ensure_downloaded(["RN50", "builtin:tiny", "RN50"], download_root=root) == ["RN50"]
    assert "downloading CLIP RN50" in capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir()) == ["tiny-clip.pt"]  # no staging folder left behind
    assert ensure_downloaded(["RN50"], download_root=root) == []
    assert len(server.requests) == 1
    model = load_clip("RN50", download_root=root)  # the load path verifies the same SHA256
    assert model.encode_texts(["a photo"]).shape == (1, 32)


def test_a_checksum_mismatch_is_refused_and_nothing_is_kept(server, tmp_path, monkeypatch):
    monkeypatch.setitem(clip_models.CLIP_URLS, "RN50", server.url(f"{WRONG_SHA}/tiny-clip.pt"))
    root = tmp_path / "cache"
    with pytest.raises(UserError, match="does not match its SHA256") as info:
        ensure_downloaded(["RN50"], download_root=root)
    assert "'RN50'" in str(info.value) and str(root / "tiny-clip.pt") in str(info.value)
    assert len(server.requests) == 1 and list(root.iterdir()) == []


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_offline_keeps_the_refusal_and_its_advice(server, tmp_path, monkeypatch, how):
    if how == "environment":
        monkeypatch.setenv(OFFLINE_ENV, "1")
    with pytest.raises(UserError, match="is not downloaded") as info:
        ensure_downloaded(["RN50"], offline=how == "argument", download_root=tmp_path)
    assert str(tmp_path / "tiny-clip.pt") in str(info.value) and "local .pt" in str(info.value)
    assert server.requests == []


def test_no_network_is_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.delenv(OFFLINE_ENV, raising=False)
    monkeypatch.setitem(clip_models.CLIP_URLS, "RN50", f"http://127.0.0.1:9/{WRONG_SHA}/tiny-clip.pt")
    with pytest.raises(UserError, match="downloading .* failed .*--offline"):
        ensure_downloaded(["RN50"], download_root=tmp_path / "cache")
    assert not (tmp_path / "cache" / "tiny-clip.pt").exists()


def test_adapt_downloads_before_training_unless_offline(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))  # clip's default cache: ~/.cache/clip
    args = ["adapt", "--generator", "builtin:tiny", "--clip", "RN50", "--source", "photo", "--target", "sketch",
            "--device", "cpu", "--steps", "2", "--eval-every", "2", "--n-eval", "2", "--n-samples", "2"]
    assert main([*args, "--out", str(tmp_path / "offline"), "--offline"]) == 2
    assert "is not downloaded" in capsys.readouterr().err and server.requests == []
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    assert len(server.requests) == 1 and (tmp_path / ".cache" / "clip" / "tiny-clip.pt").is_file()
    assert (tmp_path / "run" / "generator.pt").is_file()


def test_the_sweep_driver_downloads_before_any_trial(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "catalog.yaml").write_text("source: photo\ndomains:\n  - {name: sketch, target: sketch}\n")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("name: t\ngenerator: builtin:tiny\nclip: [RN50]\ncatalog: catalog.yaml\ntrain: {steps: 2}\n")
    monkeypatch.setenv(OFFLINE_ENV, "1")
    assert main(["run", str(sweep)]) == 2
    assert "is not downloaded" in capsys.readouterr().err and server.requests == []
    monkeypatch.delenv(OFFLINE_ENV)
    # a download that fails its checksum stops the command before Ray or any trial starts
    monkeypatch.setitem(clip_models.CLIP_URLS, "RN50", server.url(f"{WRONG_SHA}/tiny-clip.pt"))
    assert main(["run", str(sweep)]) == 2
    assert "SHA256" in capsys.readouterr().err and len(server.requests) == 1
    assert not (tmp_path / "results").exists()


def test_models_lists_clip_cache_state_and_generator_presets(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    ensure_downloaded(["RN50"])
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 2}
    assert "cached" in rows["RN50"] and "not downloaded" in rows["ViT-B/32"]
    assert str(tmp_path / ".cache" / "clip" / "ViT-B-32.pt") in rows["ViT-B/32"]
    assert "stylegan2-ffhq-config-f.pt" in rows["ffhq"] and "afhqcat.pkl" in out
    assert "NADA_SWEEP_OFFLINE" in out
