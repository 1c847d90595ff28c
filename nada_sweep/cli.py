"""The `nada-sweep` command line: run | validate | status | adapt | report | generate | invert | video |
convert | models.

Every bad input ends as one message naming the file/field/value and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from nada_sweep.adapt.settings import AdaptConfig, ClipSpec
from nada_sweep.errors import UserError
from nada_sweep.media.arguments import (INVERT_OPTIONS, HelpFormatter, add_invert_parser, add_media_options,
                                        add_model_options, add_video_parser)

console = Console()
if not console.is_terminal:
    # Logs and pipes have no width; rich's 80-column fallback would squeeze the tables into unreadable cells.
    console = Console(width=200)

EXIT_USAGE = 2
OFFLINE_HELP = "never download CLIP weights (as when NADA_SWEEP_OFFLINE=1 is set); a missing one is an error"
EXIT_INTERRUPTED = 130


def _parse_clip_options(values: list[str] | None) -> list[ClipSpec] | None:
    from nada_sweep.models.clip_models import parse_clip_arg

    if not values:
        return None
    return [ClipSpec(name=name, weight=weight) for name, weight in map(parse_clip_arg, values)]


def cmd_adapt(args: argparse.Namespace) -> int:
    from nada_sweep.adapt.command import adapt_command

    fields = {name: getattr(args, name) for name in AdaptConfig.model_fields if getattr(args, name, None) is not None}
    if args.clip:
        fields["clip"] = _parse_clip_options(args.clip)
    if args.mapper_steps:
        fields["mapper"] = {"steps": args.mapper_steps}
    return adapt_command(fields, args.out, overwrite=args.overwrite, offline=args.offline, console=console)


def cmd_generate(args: argparse.Namespace) -> int:
    from nada_sweep.generate import generate_command

    return generate_command(args.generator, args.out, n=args.n, seed=args.seed, truncation=args.truncation,
                            device=args.device, use_mapper=not args.no_mapper, latents=args.latents,
                            domains=args.domain or (), mix=args.mix, base=args.base, console=console)


def cmd_invert(args: argparse.Namespace) -> int:
    from nada_sweep.media.commands import invert_command
    from nada_sweep.media.settings import InvertSettings

    settings = InvertSettings(**{name: getattr(args, name) for name in INVERT_OPTIONS})
    invert_command(Path(args.photos), args.generator, Path(args.out), settings, perceptual=args.perceptual,
                   clip=args.clip, device=args.device, overwrite=args.overwrite, console=console)
    return 0


def cmd_video(args: argparse.Namespace) -> int:
    from nada_sweep.media.commands import morph_command, walk_command
    from nada_sweep.media.settings import VideoSettings

    settings = VideoSettings(frames=args.frames, fps=args.fps, seed=args.seed, truncation=args.truncation,
                             keyframes=args.keyframes, samples=args.samples)
    common = {"device": args.device, "overwrite": args.overwrite, "console": console}
    if args.kind == "walk":
        walk_command(args.generators, args.results, args.out, settings, **common)
    else:
        morph_command(args.source, args.target, args.out, settings, **common)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from nada_sweep.media.settings import VideoSettings
    from nada_sweep.sweep.driver import run_command

    media = bool(args.photos or args.videos) and not args.dry_run
    if media:
        VideoSettings(frames=args.video_frames).check("--video-frames")
        results = _check_run_media(args)
    code = run_command(
        args.sweep,
        demo=args.demo,
        dry_run=args.dry_run,
        fresh=args.fresh,
        address=args.address,
        verbose=args.verbose,
        offline=args.offline,
        console=console,
    )
    if media and code != EXIT_INTERRUPTED:
        from nada_sweep.media.commands import sweep_media
        from nada_sweep.report import build_report

        sweep_media(results, photos=args.photos, videos=args.videos, video_frames=args.video_frames, console=console)
        console.print(f"gallery: {build_report(results, console=console)}")
    return code


def _check_run_media(args: argparse.Namespace) -> Path:
    """The results folder of the sweep; a latents file its generator cannot render is refused before the run."""
    from nada_sweep.sweep.load import load_sweep

    sweep = load_sweep(args.sweep, demo=args.demo)
    if args.photos:
        from nada_sweep.media.latents import describe, load_latents

        latents = load_latents(args.photos)
        if (latents.generator["size"], latents.generator["n_latent"]) != (sweep.generator_size, sweep.n_latent):
            raise UserError(f"--photos: {args.photos} was made for a generator with {describe(latents.generator)}; "
                            f"the sweep's generator {sweep.generator} has size {sweep.generator_size}, n_latent "
                            f"{sweep.n_latent}: invert the photos with that generator")
    return sweep.results_root


def cmd_validate(args: argparse.Namespace) -> int:
    from nada_sweep.sweep.driver import validate_command

    return validate_command(args.sweep, demo=args.demo, console=console)


def cmd_report(args: argparse.Namespace) -> int:
    from nada_sweep.report import build_report, check_reportable, print_best_table

    check_reportable(args.results_dir)
    if args.photos or args.videos:
        from nada_sweep.media.commands import sweep_media

        sweep_media(args.results_dir, photos=args.photos, videos=args.videos, video_frames=args.video_frames,
                    select_metric=args.metric, collapse_threshold=args.collapse_threshold, console=console)
    if not args.no_morphs:
        from nada_sweep.media.domain_morphs import morph_rows

        morph_rows(args.results_dir, select_metric=args.metric, collapse_threshold=args.collapse_threshold,
                   console=console)
    print_best_table(args.results_dir, console, select_metric=args.metric, collapse_threshold=args.collapse_threshold)
    index = build_report(args.results_dir, select_metric=args.metric, collapse_threshold=args.collapse_threshold,
                         export_full=args.export_full, console=console)
    console.print(f"gallery: {index}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from nada_sweep.report.status import status_command

    if args.interval <= 0:
        raise UserError(f"--interval: {args.interval} must be a positive number of seconds")
    return status_command(args.results_dir, watch=args.watch, interval=args.interval, console=console)


def cmd_convert(args: argparse.Namespace) -> int:
    from nada_sweep.models.checkpoints import convert_generator

    spec, has_avg = convert_generator(args.source, args.out, overwrite=args.overwrite)
    console.print(f"wrote {args.out}: {spec.size} px, style_dim {spec.style_dim}, {spec.n_mlp} mapping layers"
                  + (", latent_avg (the truncation centre)" if has_avg else ", no latent_avg in the source"))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from rich.table import Table

    from nada_sweep.models.clip_models import BUILTIN_TINY, CLIP_URLS, OFFLINE_ENV, clip_cache_path, is_offline
    from nada_sweep.models.presets import PRESETS

    clips = Table(title="CLIP models", title_justify="left")
    for column in ("name", "weights", "file"):
        clips.add_column(column)
    for name in CLIP_URLS:
        path = clip_cache_path(name)
        clips.add_row(name, "cached" if path.is_file() else "not downloaded", str(path))
    clips.add_row(BUILTIN_TINY, "built in", "random weights, for tests and demos")
    console.print(clips)
    state = "off" if is_offline() else "on: `run` and `adapt` fetch missing ones before training"
    console.print(f"CLIP downloads {state} ({OFFLINE_ENV}=1 or --offline turns them off)", soft_wrap=True)

    presets = Table(title="Generator presets (a file in the sweep's weights_dir)", title_justify="left")
    for column in ("preset", "file", "model", "where to get it"):
        presets.add_column(column)
    for name, preset in PRESETS.items():
        presets.add_row(name, preset.file, preset.what, preset.source)
    console.print(presets)
    console.print("Any generator file works too: a rosinality-format .pt, or an NVIDIA StyleGAN2-ADA .pkl (read "
                  "without running its code; `nada-sweep convert` turns it into a .pt); builtin:tiny has random "
                  "weights", soft_wrap=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nada-sweep",
        description="StyleGAN-NADA domain adaptation for many text-described domains, swept on Ray Tune.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run a sweep: every domain x search-space trial on Ray Tune, then leaderboard and gallery",
        formatter_class=HelpFormatter,
        description="Run (or resume) the sweep described by SWEEP. Rerunning the same command continues it: "
        "finished trials are kept, interrupted ones continue from their last checkpoint. Exit code 0 when every "
        "trial succeeded, 1 when some failed, 2 for bad input, 130 when interrupted.",
    )
    run.add_argument("sweep", help="sweep YAML file, e.g. sweep.yaml")
    run.add_argument("--demo", action="store_true", help="same catalog and search on tiny random-weight models")
    run.add_argument("--dry-run", action="store_true", help="validate and print the trial table; start nothing")
    run.add_argument("--fresh", action="store_true", help="move an existing results folder aside and start over")
    run.add_argument("--address", help="join a running Ray cluster: 'auto' (the one this machine belongs to), "
                     "host:port (the head's address) or ray://host:port (Ray Client); default: a local Ray")
    run.add_argument("--verbose", action="store_true", help="show Ray's own output")
    run.add_argument("--offline", action="store_true", help=OFFLINE_HELP)
    add_media_options(run)
    run.set_defaults(handler=cmd_run)

    validate = commands.add_parser(
        "validate", help="check a sweep file and print its trial table", formatter_class=HelpFormatter
    )
    validate.add_argument("sweep", help="sweep YAML file")
    validate.add_argument("--demo", action="store_true", help="validate the --demo variant")
    validate.set_defaults(handler=cmd_validate)

    status = commands.add_parser(
        "status",
        help="where a sweep stands, read from its results folder (also while it runs, from anywhere that sees it)",
        formatter_class=HelpFormatter,
        description="Trials finished, running and failed per domain, each running trial's step and latest "
        "metric, each domain's best trial so far and an ETA, all read from RESULTS_DIR.",
    )
    status.add_argument("results_dir", help="the sweep's results folder, e.g. results/ffhq")
    status.add_argument("--watch", action="store_true", help="redraw it until Ctrl+C")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between redraws with --watch")
    status.set_defaults(handler=cmd_status)

    adapt = commands.add_parser(
        "adapt",
        help="adapt one generator to one target domain (no Ray)",
        formatter_class=HelpFormatter,
        description="Fine-tune a copy of a StyleGAN2 generator so that its images move from SOURCE to TARGET "
        "along CLIP's text direction (StyleGAN-NADA).",
    )
    adapt.add_argument(
        "--clip",
        action="append",
        metavar="NAME[=WEIGHT]",
        help="CLIP model guiding the training, repeat for an ensemble: an OpenAI name (ViT-B/32), a local .pt "
        "file or builtin:tiny; WEIGHT scales its loss (default: ViT-B/32=1.0)",
    )
    adapt.add_argument(
        "--mapper-steps",
        type=int,
        default=0,
        help="train a latent mapper for this many steps after adaptation (0 = no mapper; other mapper "
        "settings at their defaults, see the README)",
    )
    add_model_options(adapt, AdaptConfig, skip={"clip", "mapper"})
    adapt.add_argument("--out", help="run folder (default: results/adapt/<target>)")
    adapt.add_argument("--overwrite", action="store_true", help="replace a finished run already in --out")
    adapt.add_argument("--offline", action="store_true", help=OFFLINE_HELP)
    adapt.set_defaults(handler=cmd_adapt)

    generate = commands.add_parser(
        "generate", help="render samples of a generator file into a PNG grid", formatter_class=HelpFormatter
    )
    generate.add_argument("generator", nargs="?", help="rosinality-format .pt file (ours or anyone's), NVIDIA "
                          "StyleGAN2-ADA .pkl, or builtin:tiny (or none, with --domain)")
    generate.add_argument("--domain", action="append", metavar="DOMAIN.PT",
                          help="render a light trial's domain file on its base generator; repeat with --mix")
    generate.add_argument("--mix", metavar="W1,W2,...", help="weights of the --domain files: their offsets are "
                          "summed with these weights (one domain: its offsets scaled, 0 = the base)")
    generate.add_argument("--base", help="the base generator of the domain files (default: the path they "
                          "record); refused when its SHA-256 differs from theirs")
    generate.add_argument("--n", type=int, default=16, help="number of images")
    generate.add_argument("--seed", type=int, default=0, help="seed of the latents")
    generate.add_argument("--truncation", type=float, default=1.0, help="truncation psi (1 = none)")
    generate.add_argument("--out", default="grid.png", help="PNG file to write")
    generate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    generate.add_argument("--no-mapper", action="store_true", help="ignore a mapper.pt saved beside the generator")
    generate.add_argument("--latents", help="render the photo codes of this file (from `nada-sweep invert`) "
                          "instead of seeded samples (--n, --seed, --truncation then do not apply)")
    generate.set_defaults(handler=cmd_generate)

    add_invert_parser(commands, HelpFormatter, cmd_invert)
    add_video_parser(commands, HelpFormatter, cmd_video)

    report = commands.add_parser(
        "report",
        help="rebuild leaderboard, gallery and plots of a (finished or half-finished) sweep from disk",
        formatter_class=HelpFormatter,
    )
    report.add_argument("results_dir", help="the sweep's results folder, e.g. results/ffhq")
    report.add_argument("--metric", help="metric that picks each domain's best trial (default: the sweep's)")
    report.add_argument(
        "--collapse-threshold",
        type=float,
        help="diversity_ratio below which a trial counts as collapsed (default: the sweep's)",
    )
    report.add_argument("--export-full", action=argparse.BooleanOptionalAction, default=None,
                        help="best/<domain>/ of a light-mode winner gets its folded generator.pt (~120 MB at 1024 "
                        "px) beside its domain.pt (default: the sweep file's export_full, off)")
    report.add_argument("--no-morphs", action="store_true", help="do not render the gallery's morph rows (the "
                        "source morphing into each domain's light-mode winner; rendered only when missing or stale)")
    add_media_options(report)
    report.set_defaults(handler=cmd_report)

    convert = commands.add_parser(
        "convert",
        help="write an NVIDIA StyleGAN2-ADA .pkl generator as a rosinality-format .pt file",
        formatter_class=HelpFormatter,
        description="Read G_ema of a StyleGAN2-ADA network pickle (without running any code from it) and save it "
        "as {'g_ema': state_dict, 'latent_avg': w_avg} in rosinality/stylegan2-pytorch's layout, which "
        "StyleGAN-NADA and other StyleGAN2 tools load. A .pt source is re-saved the same way.",
    )
    convert.add_argument("source", help="the generator to convert: a .pkl (or .pt) file")
    convert.add_argument("out", help="the .pt file to write")
    convert.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    convert.set_defaults(handler=cmd_convert)

    models = commands.add_parser("models", help="list the CLIP models (downloaded or not) and generator presets")
    models.set_defaults(handler=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UserError as error:
        print(f"nada-sweep: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("nada-sweep: interrupted; run the same command again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED


def console_main() -> None:
    """The `nada-sweep` executable: main(), then exit without the interpreter's final garbage collection.

    torch, torchvision and Ray leave millions of objects behind; the collection at interpreter exit walks them
    for about two seconds on a small machine. Every file is closed and Ray is stopped by now, so nothing needs it.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console_main()
