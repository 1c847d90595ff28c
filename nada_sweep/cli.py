"""The `nada-sweep` command line: run | validate | status | adapt | report | generate | models.

Every bad input ends as one message naming the file/field/value and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import re
import shutil
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

import pydantic
from rich.console import Console

from nada_sweep.adapt.settings import AdaptConfig, ClipSpec
from nada_sweep.errors import UserError, describe_validation_error

console = Console()
if not console.is_terminal:
    # Logs and pipes have no width; rich's 80-column fallback would squeeze the tables into unreadable cells.
    console = Console(width=200)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _field_type(annotation: object) -> tuple[Callable[[str], object] | None, Sequence[str] | None]:
    """argparse type and choices for a pydantic field annotation (int, float, str, bool, Literal, X | None)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
        origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return str, typing.get_args(annotation)
    return annotation if annotation in (int, float, str) else None, None


def _add_model_options(parser: argparse.ArgumentParser, model: type[pydantic.BaseModel], skip: set[str]) -> None:
    """One --option per field, its help and default taken from the schema so the two never disagree."""
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


def _parse_clip_options(values: list[str] | None) -> list[ClipSpec] | None:
    from nada_sweep.models.clip_models import parse_clip_arg

    if not values:
        return None
    return [ClipSpec(name=name, weight=weight) for name, weight in map(parse_clip_arg, values)]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "run"


def cmd_adapt(args: argparse.Namespace) -> int:
    from nada_sweep.adapt.run import run_adaptation
    from nada_sweep.run_files import CONFIG, RunFolder, read_json

    fields = {name: getattr(args, name) for name in AdaptConfig.model_fields if getattr(args, name, None) is not None}
    clip = _parse_clip_options(args.clip)
    if clip:
        fields["clip"] = clip
    if args.mapper_steps:
        fields["mapper"] = {"steps": args.mapper_steps}
    try:
        config = AdaptConfig(**fields)
    except pydantic.ValidationError as error:
        raise describe_validation_error(error, "command line") from None
    out = Path(args.out or Path("results") / "adapt" / _slug(config.target or Path(config.target_images).name))
    folder = RunFolder(out)
    if out.exists() and any(out.iterdir()):
        if not folder.path(CONFIG).exists():
            raise UserError(f"--out: {out} is a non-empty folder that holds no nada-sweep run; choose another")
        if args.overwrite:
            shutil.rmtree(out)
        elif folder.is_finished():
            raise UserError(f"--out: {out} already holds a finished run; pass --overwrite to replace it")
    summary = run_adaptation(config, out, on_eval=_print_eval)
    best = summary.best_metrics
    console.print(
        f"[bold green]done[/] {summary.steps_done} steps -> {out}  best step {summary.best_step}: "
        + ", ".join(f"{k}={v:.4f}" for k, v in best.items() if isinstance(v, float) and k != "elapsed_s")
    )
    label = read_json(folder.path(CONFIG)).get("label")
    if label:
        console.print(f"[yellow]{label}[/]")
    return 0


def _print_eval(entry: dict) -> None:
    shown = ", ".join(f"{k}={v:.4f}" for k, v in entry.items() if isinstance(v, float) and k != "elapsed_s")
    console.print(f"step {entry['step']}: {shown}")


def cmd_generate(args: argparse.Namespace) -> int:
    from nada_sweep.generate import generate_grid

    if args.n <= 0:
        raise UserError(f"--n: {args.n} must be a positive number of images")
    if not 0 < args.truncation <= 1:
        raise UserError(f"--truncation: {args.truncation} must be in (0, 1]")
    out, mapped = generate_grid(
        args.generator,
        Path(args.out),
        n=args.n,
        seed=args.seed,
        truncation=args.truncation,
        device=args.device,
        use_mapper=not args.no_mapper,
    )
    console.print(f"wrote {out}" + (" (latent mapper applied)" if mapped else ""))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from nada_sweep.sweep.driver import run_command

    return run_command(
        args.sweep,
        demo=args.demo,
        dry_run=args.dry_run,
        fresh=args.fresh,
        address=args.address,
        verbose=args.verbose,
        console=console,
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from nada_sweep.sweep.driver import validate_command

    return validate_command(args.sweep, demo=args.demo, console=console)


def cmd_report(args: argparse.Namespace) -> int:
    from nada_sweep.report import build_report, print_best_table

    print_best_table(args.results_dir, console, select_metric=args.metric, collapse_threshold=args.collapse_threshold)
    index = build_report(
        args.results_dir, select_metric=args.metric, collapse_threshold=args.collapse_threshold, console=console
    )
    console.print(f"gallery: {index}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from nada_sweep.report.status import status_command

    if args.interval <= 0:
        raise UserError(f"--interval: {args.interval} must be a positive number of seconds")
    return status_command(args.results_dir, watch=args.watch, interval=args.interval, console=console)


def cmd_models(args: argparse.Namespace) -> int:
    import clip

    print("CLIP models:", ", ".join([*clip.available_models(), "builtin:tiny"]))
    print("Generators: any rosinality-format .pt file, or builtin:tiny (random weights, for demos and tests)")
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
        formatter_class=_HelpFormatter,
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
    run.set_defaults(handler=cmd_run)

    validate = commands.add_parser(
        "validate", help="check a sweep file and print its trial table", formatter_class=_HelpFormatter
    )
    validate.add_argument("sweep", help="sweep YAML file")
    validate.add_argument("--demo", action="store_true", help="validate the --demo variant")
    validate.set_defaults(handler=cmd_validate)

    status = commands.add_parser(
        "status",
        help="where a sweep stands, read from its results folder (also while it runs, from anywhere that sees it)",
        formatter_class=_HelpFormatter,
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
        formatter_class=_HelpFormatter,
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
    _add_model_options(adapt, AdaptConfig, skip={"clip", "mapper"})
    adapt.add_argument("--out", help="run folder (default: results/adapt/<target>)")
    adapt.add_argument("--overwrite", action="store_true", help="replace a finished run already in --out")
    adapt.set_defaults(handler=cmd_adapt)

    generate = commands.add_parser(
        "generate", help="render samples of a generator file into a PNG grid", formatter_class=_HelpFormatter
    )
    generate.add_argument("generator", help="rosinality-format .pt file (ours or anyone's), or builtin:tiny")
    generate.add_argument("--n", type=int, default=16, help="number of images")
    generate.add_argument("--seed", type=int, default=0, help="seed of the latents")
    generate.add_argument("--truncation", type=float, default=1.0, help="truncation psi (1 = none)")
    generate.add_argument("--out", default="grid.png", help="PNG file to write")
    generate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    generate.add_argument("--no-mapper", action="store_true", help="ignore a mapper.pt saved beside the generator")
    generate.set_defaults(handler=cmd_generate)

    report = commands.add_parser(
        "report",
        help="rebuild leaderboard, gallery and plots of a (finished or half-finished) sweep from disk",
        formatter_class=_HelpFormatter,
    )
    report.add_argument("results_dir", help="the sweep's results folder, e.g. results/ffhq")
    report.add_argument("--metric", help="metric that picks each domain's best trial (default: the sweep's)")
    report.add_argument(
        "--collapse-threshold",
        type=float,
        help="diversity_ratio below which a trial counts as collapsed (default: the sweep's)",
    )
    report.set_defaults(handler=cmd_report)

    models = commands.add_parser("models", help="list the CLIP model names and generator presets")
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
