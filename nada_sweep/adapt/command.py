"""`nada-sweep adapt`: one adaptation from the command line.

Every input is checked before anything is written (the run folder, the device, the prompts against CLIP,
the generator against k, the style images, every CLIP model): a refused command leaves no folder behind. A run
whose loss becomes NaN or infinite ends like a sweep's diverged trial: status `diverged` and EXIT_DIVERGED.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic
import torch
from rich.console import Console
from rich.text import Text

from nada_sweep.adapt.losses import style_image_files
from nada_sweep.adapt.nada import load_guidance
from nada_sweep.adapt.run import TrainingDiverged, check_config_against_models, run_adaptation
from nada_sweep.adapt.settings import LR_BY_PARAMS, AdaptConfig
from nada_sweep.devices import resolve_device
from nada_sweep.errors import Loc, Problems, UserError
from nada_sweep.models.checkpoints import load_generator
from nada_sweep.models.clip_models import ensure_downloaded, load_clip
from nada_sweep.paths import output_folder_problem
from nada_sweep.run_files import CONFIG, RunFolder, read_json

EXIT_DIVERGED = 3  # the run stopped because its loss (or its metrics) became NaN or infinite
EXIT_OUT_OF_MEMORY = 1  # a failure of the run, not of its input: status.json says `failed`
# How the command line names the AdaptConfig fields that have no --option of their own.
_OPTION_OF = {("mapper", "steps"): "--mapper-steps", ("clip",): "--clip"}


def adapt_command(fields: Mapping[str, Any], out: str | None, *, overwrite: bool, offline: bool,
                  console: Console) -> int:
    """Check everything, then adapt; `fields`: the AdaptConfig values given on the command line."""
    config = _config(fields)
    folder = RunFolder(out or Path("results") / "adapt" / _slug(config.target or Path(config.target_images).name))
    replace = _check_out(folder, overwrite)
    ensure_downloaded([spec.name for spec in config.clip] + [config.eval_clip_name], offline=offline)
    _check_inputs(config)
    if replace:
        shutil.rmtree(folder.root)
    try:
        summary = run_adaptation(config, folder.root, on_eval=lambda entry: console.print(f"step {entry['step']}: "
                                                                                           f"{_shown(entry)}"))
    except TrainingDiverged as error:
        print(f"nada-sweep: diverged: {error}; status.json records `diverged` (exit code {EXIT_DIVERGED})",
              file=sys.stderr)
        return EXIT_DIVERGED
    except torch.OutOfMemoryError:
        return _out_of_memory(config, "the GPU")
    except RuntimeError as error:
        if "can't allocate memory" not in str(error):
            raise
        return _out_of_memory(config, "the machine")
    console.print(f"[bold green]done[/] {summary.steps_done} steps -> {folder.root}  best step {summary.best_step}: "
                  + _shown(summary.best_metrics))
    label = read_json(folder.path(CONFIG)).get("label")
    if label:
        console.print(Text(label, style="yellow"))
    return 0


def _config(fields: Mapping[str, Any]) -> AdaptConfig:
    fields = dict(fields)
    # offsets train at their own published lr (README: Light parametrizations), unless --lr says otherwise
    fields.setdefault("lr", LR_BY_PARAMS.get(fields.get("params", "full"), LR_BY_PARAMS["full"]))
    try:
        return AdaptConfig(**fields)
    except pydantic.ValidationError as error:
        problems = Problems(lambda loc: "command line", _option_name)
        problems.add_validation_error(error)
        raise UserError("\n".join(problems.messages)) from None


def _option_name(loc: Loc) -> str:
    """`--lambda-global` for ("lambda_global",): the option as typed; settings as a whole are "options"."""
    for length in (2, 1):
        if tuple(loc[:length]) in _OPTION_OF:
            return _OPTION_OF[tuple(loc[:length])]
    return "--" + str(loc[0]).replace("_", "-") if loc else "options"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "run"


def _check_out(folder: RunFolder, overwrite: bool) -> bool:
    """Whether --out holds a finished run to replace (--overwrite); UserError when it cannot be the run folder."""
    out = folder.root
    problem = output_folder_problem(out)
    if problem:
        raise UserError(f"--out: {problem}")
    if not out.exists() or not any(out.iterdir()):
        return False
    if not folder.path(CONFIG).exists():
        raise UserError(f"--out: {out} is a non-empty folder that holds no nada-sweep run; choose another")
    if folder.is_finished() and not overwrite:
        raise UserError(f"--out: {out} already holds a finished run; pass --overwrite to replace it")
    return overwrite


def _check_inputs(config: AdaptConfig) -> None:
    """Load what the run will use (all cached per process, so the run reuses it) and check it; writes nothing."""
    device = resolve_device(config.device, "--device")
    loaded = load_generator(config.generator, device)
    check_config_against_models(config, loaded.generator.n_latent)
    if config.target_images:
        style_image_files(config.target_images)
    load_guidance(config, device)
    load_clip(config.eval_clip_name, device)


def _out_of_memory(config: AdaptConfig, where: str) -> int:
    print(f"nada-sweep: error: the run ran out of memory on {where} (batch {config.batch}, n_eval {config.n_eval}, "
          f"auto_layer_batch {config.auto_layer_batch}); lower them, or use a smaller generator; status.json "
          "records `failed`", file=sys.stderr)
    return EXIT_OUT_OF_MEMORY


def _shown(entry: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in entry.items() if isinstance(v, float) and k != "elapsed_s")

