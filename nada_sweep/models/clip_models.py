"""CLIP models for guidance and evaluation, through OpenAI's `clip` package (clip-anytorch).

A CLIP model is named like `clip.available_models()` ("ViT-B/32"), given as a local .pt file (an OpenAI
JIT archive or a plain state dict), or "builtin:tiny" (seeded random weights for tests and demos).
Named models are read from clip's download cache (~/.cache/clip/<file>). Loading never downloads: an offline
worker would hang on the network. `ensure_downloaded` fetches missing files once, up front (the sweep driver
or `adapt`, before training starts), through the clip package's own download (SHA256 check, progress bar);
with `offline` (or NADA_SWEEP_OFFLINE=1) a missing file is a UserError that says where to put it.

Weights are float32 on every device, eval mode, frozen. Images enter as [-1, 1] NCHW tensors (generator
output) and are preprocessed on the tensor, differentiably, as CLIP's own PIL pipeline does it.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import shutil
import sys
import urllib.error
import warnings
import zipfile
import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from nada_sweep.errors import UserError, quoted
from nada_sweep.models.cache import ModelCache, file_identity
from nada_sweep.models.checkpoints import BUILTIN_PREFIX
from nada_sweep.models.weights_file import WeightsFileError, load_weights

import clip  # its pkg_resources warning is silenced by nada_sweep/__init__.py
from clip.model import CLIP, build_model
from clip.simple_tokenizer import SimpleTokenizer

BUILTIN_TINY = BUILTIN_PREFIX + "tiny"
OFFLINE_ENV = "NADA_SWEEP_OFFLINE"  # set to 1 on clusters whose machines have no network
# name -> download URL, ending in <sha256>/<file> as clip's own table does; a module attribute so that a test
# (or a mirror) can point names elsewhere
CLIP_URLS: dict[str, str] = dict(clip.clip._MODELS)
CONTEXT_LENGTH = 77  # every CLIP model's text context, start and end tokens included
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The ImageNet prompt templates of CLIP's prompt engineering, as StyleGAN-NADA uses them: OpenAI's 80
# minus "a photo of many {}.", which StyleGAN-NADA drops (a plural template reads badly with a singular
# domain name). They live here rather than in adapt/losses.py (which re-exports them) because
# check_prompt must know the longest template to reject prompts that only overflow once templated.
IMAGENET_TEMPLATES: list[str] = [
    "a bad photo of a {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
]


@dataclasses.dataclass(eq=False)
class ClipModel:
    """A frozen float32 CLIP model with tensor preprocessing.

    `cache` holds text embeddings computed by adapt/losses.py for this model instance; load_clip returns
    the same instance for the same spec and device, so trials in one worker process share them.
    """

    name: str                 # the spec it was loaded from ("ViT-B/32", an absolute file path, "builtin:tiny")
    model: CLIP
    input_resolution: int     # side of the square image the vision tower takes (224 for ViT-B)
    device: torch.device
    random_weights: bool      # True for builtin:tiny: scores from it mean nothing
    # Antialiased bicubic downsampling matches the PIL resize CLIP was trained with (and what StyleGAN-NADA
    # gets from torchvision >= 0.17); the reference under old torchvision resized tensors without it.
    antialias: bool = True
    cache: dict = dataclasses.field(default_factory=dict, repr=False)
    # Made once on the model's device: built per call, each would be a host-to-device copy the CPU waits on.
    mean: Tensor = dataclasses.field(init=False, repr=False)
    std: Tensor = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)

    def preprocess(self, images: Tensor) -> Tensor:
        """[-1, 1] NCHW images -> CLIP input: [0, 1], bicubic resize (shorter side), centre crop, normalise."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape [N, 3, H, W], got {tuple(images.shape)}")
        x = (images.to(self.device, torch.float32) + 1) / 2
        size = self.input_resolution
        height, width = x.shape[-2:]
        if min(height, width) != size:
            # torchvision's Resize(int): the shorter side becomes `size`, the longer keeps the aspect ratio.
            if height <= width:
                new_hw = (size, int(size * width / height))
            else:
                new_hw = (int(size * height / width), size)
            x = F.interpolate(x, size=new_hw, mode="bicubic", align_corners=False, antialias=self.antialias)
            height, width = new_hw
        top = int(round((height - size) / 2.0))
        left = int(round((width - size) / 2.0))
        x = x[:, :, top:top + size, left:left + size]
        return (x - self.mean) / self.std

    def encode_images(self, images: Tensor) -> Tensor:
        """[-1, 1] NCHW images -> [N, D] image embeddings, not normalised, differentiable wrt images."""
        return self.model.encode_image(self.preprocess(images))

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> Tensor:
        """Strings -> [N, D] text embeddings, not normalised, without gradients."""
        tokens = clip.tokenize(texts, context_length=CONTEXT_LENGTH).to(self.device)
        return self.model.encode_text(tokens)


def wrap_clip(model: CLIP, name: str, device: str | torch.device = "cpu",
              random_weights: bool = False) -> ClipModel:
    """Freeze a clip.model.CLIP in place (float32, eval, no grad, on `device`) and wrap it as a ClipModel."""
    device = _canonical_device(device)
    model = model.float().eval().to(device)
    model.requires_grad_(False)
    return ClipModel(name=name, model=model, input_resolution=int(model.visual.input_resolution),
                     device=device, random_weights=random_weights)


def build_tiny_clip(seed: int = 0) -> CLIP:
    """A seeded random CLIP small enough for tests: ViT with 32 px input, 32-d embeddings.

    Widths are 64 so that build_model's head count (width // 64) matches and a saved state dict round-trips.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                     context_length=CONTEXT_LENGTH, vocab_size=49408, transformer_width=64, transformer_heads=1,
                     transformer_layers=2)
    return model.float().eval()


def save_clip(model: CLIP, path: str | Path, jit: bool = False) -> None:
    """Save a CLIP model as a plain state dict, or (jit=True) as a traced TorchScript archive like OpenAI's."""
    model = model.float().eval().cpu()
    if not jit:
        torch.save(model.state_dict(), path)
        return
    images = torch.zeros(1, 3, model.visual.input_resolution, model.visual.input_resolution)
    tokens = clip.tokenize(["a photo"], context_length=model.context_length)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export; OpenAI ships it
        traced = torch.jit.trace(model, (images, tokens), check_trace=False)
        torch.jit.save(traced, str(path))


def clip_cache_path(name: str, download_root: str | Path | None = None) -> Path:
    """Where clip.load keeps (and where load_clip looks for) the weights of a named OpenAI model."""
    # the file name is the URL's basename, as clip.load uses
    root = Path(download_root) if download_root is not None else Path(os.path.expanduser("~/.cache/clip"))
    return root / os.path.basename(CLIP_URLS[name])


def is_offline(offline: bool = False) -> bool:
    """True when downloads are off: asked for (--offline) or NADA_SWEEP_OFFLINE set to 1/true/yes/on."""
    return offline or os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def ensure_downloaded(names: list[str], offline: bool = False,
                      download_root: str | Path | None = None) -> list[str]:
    """Download the named OpenAI models missing from the cache; returns the names downloaded.

    Other names (files, builtin:tiny, unknown names) are left to load_clip. Offline, a missing file is the
    UserError load_clip would raise. A download lands in a temporary folder beside the cache and is moved
    into place only after clip's SHA256 check passed, so a failed one leaves nothing behind.
    """
    downloaded = []
    for name in dict.fromkeys(names):
        if name not in CLIP_URLS or clip_cache_path(name, download_root).is_file():
            continue
        cache_file = clip_cache_path(name, download_root)
        if is_offline(offline):
            raise UserError(_not_downloaded_message(name, cache_file))
        _download(name, cache_file)
        downloaded.append(name)
    return downloaded


def _download(name: str, cache_file: Path) -> None:
    url = CLIP_URLS[name]
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    staging = cache_file.parent / f".{cache_file.name}.{os.getpid()}.download"
    try:
        print(f"downloading CLIP {name} from {url}", file=sys.stderr, flush=True)
        try:
            fetched = clip.clip._download(url, str(staging))
        except RuntimeError as exc:
            if "SHA256" not in str(exc):
                raise
            raise UserError(f"clip: {name!r}: the file downloaded from {url} does not match its SHA256 "
                            f"({url.split('/')[-2]}); it was not kept. Try again, or download it by hand to "
                            f"{cache_file}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise UserError(f"clip: {name!r} is not downloaded ({cache_file} is missing) and downloading {url} "
                            f"failed ({reason}). Without a network: {_by_hand(name, cache_file)}; or pass "
                            f"--offline / set {OFFLINE_ENV}=1 to skip downloads") from None
        os.replace(fetched, cache_file)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _by_hand(name: str, cache_file: Path) -> str:
    return (f"on a machine with internet run python -c \"import clip; clip.load('{name}', device='cpu')\" "
            f"(or download {CLIP_URLS[name]}) and copy the file to {cache_file}")


def _not_downloaded_message(name: str, cache_file: Path) -> str:
    return (f"clip: {name!r} is not downloaded: looked for {cache_file}. Trials never download (workers may be "
            f"offline); `nada-sweep run` and `adapt` download missing models first unless --offline or "
            f"{OFFLINE_ENV}=1 is set. By hand: {_by_hand(name, cache_file)}; or pass the path of a local .pt "
            "file instead of the name.")


_LOADED: ModelCache[ClipModel] = ModelCache(entries=4)  # a guidance ensemble of three plus an evaluation model


def load_clip(spec: str, device: str | torch.device = "cpu", download_root: str | Path | None = None) -> ClipModel:
    """Load a CLIP model by name, local .pt path or "builtin:tiny"; cached per process by (spec, device).

    download_root: the cache folder for named models (default ~/.cache/clip, as clip.load uses).
    """
    device = _canonical_device(device)
    path = Path(spec).expanduser()
    if spec == BUILTIN_TINY:
        key: tuple = (spec, str(device))
    elif spec in CLIP_URLS:
        cache_file = clip_cache_path(spec, download_root)
        key = (spec, str(device), str(cache_file))
    elif path.is_file():
        key = (*file_identity(path), str(device))
    else:
        raise UserError(_not_found_message(spec))

    def load() -> ClipModel:
        if spec == BUILTIN_TINY:
            return wrap_clip(build_tiny_clip(seed=0), BUILTIN_TINY, device, random_weights=True)
        if spec in CLIP_URLS:
            return wrap_clip(_load_cached_openai(spec, cache_file), spec, device)
        return wrap_clip(_load_clip_file(path.resolve(), label=spec), str(path.resolve()), device)

    return _LOADED.get(key, load)


def parse_clip_arg(text: str) -> tuple[str, float]:
    """"ViT-B/32=0.5" -> ("ViT-B/32", 0.5); the weight defaults to 1.0. Paths containing "=" need a weight."""
    name, sep, weight_text = text.rpartition("=")
    if not sep:
        name, weight_text = text, "1.0"
    name = name.strip()
    if not name:
        raise UserError(f"clip: {text!r} has no model name; use NAME or NAME=WEIGHT, e.g. ViT-B/32=1.0")
    try:
        weight = float(weight_text)
    except ValueError:
        raise UserError(f"clip: {text!r}: weight {weight_text!r} is not a number; use NAME=WEIGHT with "
                        "a WEIGHT > 0, e.g. ViT-B/32=1.0") from None
    if not math.isfinite(weight) or weight <= 0:
        raise UserError(f"clip: {text!r}: weight {weight_text!r} must be a finite number > 0")
    return name, weight


_PROMPT_PREFIX = 4096  # characters; far more than CLIP's 77 tokens of any real prompt


def check_prompt(text: str, field: str) -> None:
    """Reject a prompt that is empty or too long for CLIP, alone or inside the longest prompt template."""
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"{field}: {quoted(text)} is empty; give a short text such as 'photo' or 'pencil sketch'")
    overhead, template = _longest_template()
    limit = CONTEXT_LENGTH - 2 - overhead  # start and end tokens, then the template's own words
    # A start already over the limit settles it: a pasted 50 MB text is not tokenized whole (~1 s per MB).
    text_tokens = len(_tokenizer().encode(text[:_PROMPT_PREFIX]))
    counted = str(text_tokens)
    if len(text) > _PROMPT_PREFIX:
        if text_tokens <= limit:
            text_tokens = len(_tokenizer().encode(text))
            counted = str(text_tokens)
        else:
            counted = f"more than {text_tokens - 1}"  # a word cut at the end of the start may count one more
    if text_tokens > limit:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise UserError(f"{field}: {shown!r} is {counted} CLIP tokens; at most {limit} fit, because it is "
                        f"also used inside prompt templates such as {template!r} and CLIP reads "
                        f"{CONTEXT_LENGTH} tokens; shorten it")


@functools.cache
def _longest_template() -> tuple[int, str]:
    """The prompt template with the most tokens of its own, and their count (every run checks its prompts)."""
    return max((len(_tokenizer().encode(t.format(""))), t) for t in IMAGENET_TEMPLATES)


@functools.cache
def _tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer()


def _canonical_device(device: str | torch.device) -> torch.device:
    # "cuda" and "cuda:0" must share one cache entry.
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _not_found_message(spec: str) -> str:
    available = [*CLIP_URLS, BUILTIN_TINY]
    looks_like_path = spec.endswith((".pt", ".pth")) or spec.startswith((".", "~", os.sep))
    if looks_like_path:
        return f"clip: {spec!r}: file not found (a local CLIP model file must exist; or use one of {available})"
    hint = [m for m in available if m.lower() == spec.lower()]
    did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
    return (f"clip: {spec!r} is not a CLIP model name or an existing file{did_you_mean} "
            f"Available models: {available}, or a path to a .pt file (OpenAI JIT archive or state dict)")


def _load_cached_openai(name: str, cache_file: Path) -> CLIP:
    url = CLIP_URLS[name]
    if not cache_file.is_file():
        raise UserError(_not_downloaded_message(name, cache_file))
    # clip's URLs end in <sha256>/<file>; a mismatch is usually a truncated download.
    expected = url.split("/")[-2]
    digest = hashlib.sha256()
    with open(cache_file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise UserError(f"clip: {cache_file} does not match the SHA256 of {name!r} (an interrupted "
                        f"download?); delete it and download {url} again")
    return _load_clip_file(cache_file, label=name)


def _load_clip_file(path: Path, label: str) -> CLIP:
    """A JIT archive (OpenAI's release files) or a plain state dict -> clip.model.CLIP in float32."""
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation; OpenAI ships JIT files
                state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
        except RuntimeError as exc:
            raise UserError(f"clip: {label!r}: cannot read TorchScript archive {path}: {exc}") from None
    else:
        try:
            state_dict = load_weights(path)
        except (OSError, WeightsFileError) as exc:
            raise UserError(f"clip: {label!r}: cannot read {path} as a CLIP state dict or JIT archive: "
                            f"{exc.strerror if isinstance(exc, OSError) else exc}") from None
    if not isinstance(state_dict, dict) or "text_projection" not in state_dict or not any(
            k.startswith("visual.") for k in state_dict):
        raise UserError(f"clip: {label!r}: {path} is not a CLIP model (expected OpenAI CLIP keys such as "
                        "visual.conv1.weight and text_projection)")
    state_dict = {k: v for k, v in state_dict.items() if k not in ("input_resolution", "context_length",
                                                                    "vocab_size")}
    try:
        model = build_model(dict(state_dict)).float()
        # build_model casts to fp16; loading again keeps full precision for float32 files.
        model.load_state_dict(state_dict)
    except (KeyError, RuntimeError, AssertionError, ValueError, AttributeError, TypeError, IndexError) \
            as exc:
        raise UserError(f"clip: {label!r}: {path} does not hold a complete CLIP model: {exc}") from None
    return model


def _is_torchscript(path: Path) -> bool:
    # A TorchScript archive is a zip with constants.pkl; torch.save files are zips without it.
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
