"""Option builders of the command line: its help formatter, one --option per field of a settings model, the
options of `invert` and `video`, and the --photos / --videos options of `report` and `run`.

Torch-free: building the parser must not load torch (`nada-sweep report` never does).
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Sequence

import pydantic

from nada_sweep.media.settings import InvertSettings, VideoSettings


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default once: a help text that states its default itself, an option whose default
    None stands for "not given" and an on/off flag get no "(default: ...)" appended."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or action.default is None or action.nargs == 0:
            return text
        return super()._get_help_string(action)


def _field_type(annotation: object) -> tuple[Callable[[str], object] | None, Sequence[str] | None]:
    """argparse type and choices for a pydantic field annotation (int, float, str, bool, Literal, X | None)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
        origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return str, typing.get_args(annotation)
    return annotation if annotation in (int, float, str) else None, None


def add_model_options(parser: argparse.ArgumentParser, model: type[pydantic.BaseModel], skip: set[str]) -> None:
    """One --option per field, its help and default taken from the schema so the two never disagree.

    Every option's argparse default is None ("not given"), so that only what the user typed overrides the model.
    """
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        default = info.get_default(call_default_factory=True)
        text = f"{info.description} (default: {default})"
        if info.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
            continue
        kind, choices = _field_type(info.annotation)
        parser.add_argument(flag, dest=name, type=kind, choices=choices, default=None, help=text)


def add_media_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--photos", metavar="LATENTS", help="a latents file from `nada-sweep invert`: the gallery "
                        "gets a 'your photos' section, the same codes rendered by every domain's best generator")
    parser.add_argument("--videos", action="store_true",
                        help="render a morph video (source -> domain) per domain and link it in the gallery")
    parser.add_argument("--video-frames", type=int, default=48, help="frames of each morph video (at 24 fps)")


INVERT_OPTIONS = ("steps", "lr", "lr_rampup", "lr_rampdown", "noise", "noise_ramp", "noise_regularize", "mse",
                  "perceptual_weight", "batch", "seed")


def add_invert_parser(commands: argparse._SubParsersAction, formatter: type[argparse.HelpFormatter],
                      handler: Callable[[argparse.Namespace], int]) -> None:
    invert = commands.add_parser(
        "invert",
        help="project your photos into a generator's W+ (for the gallery, generate --latents, editing)",
        formatter_class=formatter,
        description="Fit a W+ code (and noise maps) per photo so that GENERATOR renders it: the StyleGAN2 "
        "projector's recipe (learning-rate ramp, fading code noise, noise regularisation, pixel MSE plus a "
        "perceptual term). Photos are centre-cropped and resized to the generator; align faces the FFHQ way "
        "first (README). Writes OUT and OUT-stem_reconstructions/ beside it.",
    )
    defaults = InvertSettings()
    invert.add_argument("photos", help="a folder of photos (or one photo)")
    invert.add_argument("--generator", required=True, help="the generator file (the sweep's source generator)")
    invert.add_argument("--out", default="latents.pt", help="latents file to write")
    invert.add_argument("--perceptual", choices=("auto", "lpips", "clip", "none"), default="auto",
                        help="perceptual term: auto = LPIPS (VGG) when its weights are on this machine, else CLIP "
                        "image features")
    invert.add_argument("--clip", help="CLIP model of the CLIP-feature term (default: ViT-B/32; builtin:tiny for "
                        "random-weight generators)")
    invert.add_argument("--steps", type=int, default=defaults.steps, help="optimisation steps per batch")
    invert.add_argument("--batch", type=int, default=defaults.batch, help="photos optimised together")
    invert.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate")
    invert.add_argument("--lr-rampup", type=float, default=defaults.lr_rampup,
                        help="fraction of the steps of learning-rate warm-up")
    invert.add_argument("--lr-rampdown", type=float, default=defaults.lr_rampdown,
                        help="fraction of the steps of cosine learning-rate decay")
    invert.add_argument("--noise", type=float, default=defaults.noise,
                        help="initial noise added to the code, in units of the std of w")
    invert.add_argument("--noise-ramp", type=float, default=defaults.noise_ramp,
                        help="fraction of the steps after which the code noise is gone")
    invert.add_argument("--noise-regularize", type=float, default=defaults.noise_regularize,
                        help="weight of the noise maps' autocorrelation penalty")
    invert.add_argument("--mse", type=float, default=defaults.mse, help="weight of the pixel MSE")
    invert.add_argument("--perceptual-weight", type=float, default=defaults.perceptual_weight,
                        help="weight of the perceptual term")
    invert.add_argument("--seed", type=int, default=defaults.seed, help="seed of the start and the noise")
    invert.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    invert.add_argument("--overwrite", action="store_true", help="replace an existing latents file")
    invert.set_defaults(handler=handler)


def add_video_parser(commands: argparse._SubParsersAction, formatter: type[argparse.HelpFormatter],
                     handler: Callable[[argparse.Namespace], int]) -> None:
    video = commands.add_parser("video", help="latent-walk and morph videos (MP4, else animated WebP/GIF)")
    kinds = video.add_subparsers(dest="kind", required=True, metavar="KIND")
    defaults = VideoSettings()
    walk = kinds.add_parser(
        "walk", formatter_class=formatter, help="one latent walk rendered by several generators side by side",
        description="A looping walk through --keyframes latents, each frame rendered by every generator, left to "
        "right. --results DIR shows the sweep's source generator and every domain's best generator.")
    walk.add_argument("generators", nargs="*", help="generator files (same architecture)")
    walk.add_argument("--results", help="a sweep's results folder: source plus each domain's best generator")
    walk.add_argument("--keyframes", type=int, default=defaults.keyframes, help="latents the walk visits")
    morph = kinds.add_parser(
        "morph", formatter_class=formatter, help="a generator morphing into one adapted from it",
        description="--samples latents rendered while every weight moves from SOURCE (first frame) to TARGET "
        "(last frame).")
    morph.add_argument("source", help="the source generator file (or builtin:tiny)")
    morph.add_argument("target", help="a generator adapted from it, e.g. results/<sweep>/best/<domain>/generator.pt")
    morph.add_argument("--samples", type=int, default=defaults.samples, help="latents shown side by side")
    for parser in (walk, morph):
        parser.add_argument("--out", help="video file: .mp4 (H.264, needs imageio-ffmpeg), .webp or .gif "
                            "(default: walk.mp4 / morph.mp4, .webp when ffmpeg is missing)")
        parser.add_argument("--frames", type=int, default=defaults.frames, help="frames in the video")
        parser.add_argument("--fps", type=int, default=defaults.fps, help="frames per second")
        parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the latents")
        parser.add_argument("--truncation", type=float, default=defaults.truncation, help="truncation psi")
        parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        parser.add_argument("--overwrite", action="store_true", help="replace an existing video file")
        parser.set_defaults(handler=handler, keyframes=defaults.keyframes, samples=defaults.samples)
