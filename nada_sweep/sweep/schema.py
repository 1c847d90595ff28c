"""The sweep file and its domain catalog as typed models (pydantic): every field, its default and its rule.

Loading them from YAML with located errors is nada_sweep.sweep.load; what they resolve to is sweep.plan.
"""

from __future__ import annotations

import os
import re
import types
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from nada_sweep.adapt.settings import FINITE_NUMBERS, LR_BY_PARAMS, ClipSpec, ParamsName, TrainSettings
from nada_sweep.metric_rules import DEFAULT_COLLAPSE_THRESHOLD, DEFAULT_SELECT_METRIC, SelectMetric
from nada_sweep.models.presets import GENERATOR_PRESETS

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # used with fullmatch: a name becomes a folder
SAFE_NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 characters"

# One value as the sweep file gives it: no type coercion ("3" is not 3), every number finite.
VALUE_CONFIG = ConfigDict(strict=True, **FINITE_NUMBERS)
_STRICT = ConfigDict(extra="forbid", **VALUE_CONFIG)

# --demo's step budget: small enough that a whole catalog runs in minutes on two CPU cores, with a learning rate
# high enough that the adapted rows visibly differ from the source (at the real 0.002 twenty steps of the tiny
# model change its pixels by 1.2%, at 0.02 by 11.6%: measured over the 60 trials of the k-only demo).
DEMO_TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 20, "eval_every": 10, "lr": 0.02, "n_eval": 4, "n_samples": 4, "auto_layer_batch": 2,
}
# --demo's per-parametrization learning rates: full (and affine, which trains weights like it) at the demo lr
# above, offsets at their published rates.
DEMO_LR_BY_PARAMS = LR_BY_PARAMS | {"full": DEMO_TRAIN_DEFAULTS["lr"], "affine": DEMO_TRAIN_DEFAULTS["lr"]}
LrTable = dict[ParamsName, Annotated[float, Field(gt=0)]]
LR_TABLE_HELP = ("learning rate per parametrization, for every trial whose lr is not given (by train:, a domain or "
                 "the search); modes left out keep their default")


def _safe_name(value: str) -> str:
    if not SAFE_NAME.fullmatch(value):
        raise ValueError(f"must be usable as a folder name: {SAFE_NAME_RULE}")
    return value


def _clip_list(value: Any) -> Any:
    # `clip: [ViT-B/32, ViT-B/16]` is shorthand for mappings with weight 1.0.
    if isinstance(value, list):
        return [{"name": item} if isinstance(item, str) else item for item in value]
    return value


def constrained(info: Any) -> Any:
    """A field's type with its constraints (gt=0, ...) attached, usable outside its model."""
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _overrides_model(name: str) -> type[BaseModel]:
    """TrainSettings with every field optional: what a sweep's `train:` or a domain may set."""
    fields: dict[str, Any] = {
        key: (constrained(info), Field(None, description=info.description))
        for key, info in TrainSettings.model_fields.items()
    }
    return create_model(name, __config__=_STRICT, **fields)


TrainOverrides = _overrides_model("TrainOverrides")


class Resources(BaseModel):
    """What one pack (one trial when they are not packed) reserves on the Ray cluster."""

    model_config = _STRICT

    cpus: float = Field(1, gt=0, description="CPU cores per pack (torch uses this many threads)")
    gpus: float = Field(
        0, ge=0, description="GPUs per pack, at most 1; a fraction (0.5) lets several packs share one GPU "
        "(each capped at its share of the GPU's memory); 0 = CPU only"
    )

    @field_validator("gpus")
    @classmethod
    def _one_at_most(cls, value: float) -> float:
        if value > 1:
            raise ValueError("at most 1: a pack trains on one GPU, so more would sit idle; run more packs at "
                             "once instead (a fraction such as 0.5 shares a GPU between packs)")
        return value


class EarlyStopping(BaseModel):
    """ASHA early stopping; trials are only compared with trials of the same domain."""

    model_config = _STRICT

    metric: SelectMetric | None = Field(None, description="metric compared at each rung (default: select_metric)")
    grace_steps: int = Field(100, gt=0, description="no trial is stopped before this many steps")
    reduction_factor: float = Field(3, gt=1, description="keep the best 1/reduction_factor of trials at each rung")


# Most trials per pack when the sweep file sets no `pack`, by where the packs train (resources.gpus > 0: "gpu").
# CPU: a pack of 8 light trials trains 1.4x to 1.5x the trials per hour of the same 8 alone on one core
# (benchmarks/README.md), and since the sweep spreads trials over the packs that train at once, a large N leaves
# no core idle. GPU: not yet measured (the GPU smoke's pack check measures 8), so 4 stays a guess until a GPU run
# says otherwise.
# Change it here when measurements say otherwise (benchmarks/pack_throughput.py, the demo's time in README).
DEFAULT_PACK: dict[str, int] = {"cpu": 8, "gpu": 4}

SearchAlg = Literal["grid", "random", "optuna", "hyperopt"]
ADAPTIVE_SEARCH = ("optuna", "hyperopt")  # searchers that learn from finished trials (one per domain)
TRACKERS = ("tensorboard", "wandb", "mlflow")


class WandbSettings(BaseModel):
    """Weights & Biases: one run per trial, grouped by sweep."""

    model_config = _STRICT

    project: str = Field("nada-sweep", description="W&B project")
    entity: str | None = Field(None, description="W&B entity (user or team; default: your default entity)")
    mode: Literal["online", "offline"] | None = Field(
        None, description="online, or offline (run folders on disk, no network); default: WANDB_MODE, else online"
    )

    def resolved_mode(self) -> str:
        return self.mode or os.environ.get("WANDB_MODE") or "online"


class MlflowSettings(BaseModel):
    """MLflow: one run per trial in the experiment named after the sweep."""

    model_config = _STRICT

    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI (default: a local file store, mlruns/ in the sweep's results folder)"
    )


def _tracker_shorthand(value: Any) -> Any:
    # `trackers: [tensorboard, mlflow]`, `wandb: true` and a bare `wandb:` mean "on, with its defaults".
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        value = dict.fromkeys(value, True)
    if not isinstance(value, dict):
        return value
    unknown = [name for name in value if name not in TRACKERS]
    if unknown:
        raise ValueError(f"unknown tracker {unknown[0]!r}; the trackers are {', '.join(TRACKERS)}")
    settings = {}
    for name, setting in value.items():
        if name != "tensorboard" and setting in (True, None):
            setting = {}
        if setting is not False or name == "tensorboard":
            settings[name] = setting
    return settings


class Trackers(BaseModel):
    """Experiment trackers fed while the sweep runs (each an optional extra: pip install nada-sweep[NAME])."""

    model_config = _STRICT

    tensorboard: bool | None = Field(
        None, description="event files under <results>/tensorboard (default: on when tensorboard is installed)"
    )
    wandb: WandbSettings | None = Field(None, description="Weights & Biases runs (off when absent)")
    mlflow: MlflowSettings | None = Field(None, description="MLflow runs (off when absent)")

    _shorthand = model_validator(mode="before")(_tracker_shorthand)


class DemoSettings(BaseModel):
    """What `--demo` replaces: built-in tiny random-weight models and a small step budget."""

    model_config = _STRICT

    generator: str = Field("builtin:tiny", description="generator used by --demo")
    clip: list[ClipSpec] = Field(
        default_factory=lambda: [ClipSpec(name="builtin:tiny")], min_length=1, description="CLIP ensemble of --demo"
    )
    eval_clip: str | None = Field("builtin:tiny", description="evaluation CLIP model of --demo")
    train: TrainOverrides = Field(  # type: ignore[valid-type]
        default_factory=TrainOverrides,
        description="training settings applied over the sweep's and the domains' in --demo (on top of "
        "DEMO_TRAIN_DEFAULTS)",
    )
    search: dict[str, Any] | None = Field(
        None, description="search entries that replace the sweep's entries of the same setting in --demo"
    )
    resources: Resources = Field(default_factory=Resources, description="resources per pack in --demo")
    lr_by_params: LrTable = Field(default_factory=dict, description=f"{LR_TABLE_HELP} in --demo: {DEMO_LR_BY_PARAMS}")

    _shorthand = field_validator("clip", mode="before")(_clip_list)


class SweepFile(BaseModel):
    """The sweep file (sweep.yaml)."""

    model_config = _STRICT

    name: str = Field(description="the sweep's name: its results go to <results_dir>/<name>")
    generator: str = Field(
        description="generator file (path relative to this file), a preset name found in weights_dir "
        f"({', '.join(GENERATOR_PRESETS)}), or builtin:tiny"
    )
    weights_dir: str = Field("weights", description="folder holding preset generator files (relative to this file)")
    clip: list[ClipSpec] = Field(min_length=1, description="CLIP ensemble guiding training: names or {name, weight}")
    eval_clip: str | None = Field(None, description="CLIP model that computes metrics (default: the first of clip)")
    catalog: str = Field(description="domain catalog file (relative to this file), e.g. domains/ffhq.yaml")
    train: TrainOverrides = Field(  # type: ignore[valid-type]
        default_factory=TrainOverrides, description="training settings of every trial (see TrainSettings)"
    )
    search: dict[str, Any] = Field(default_factory=dict, description="searched settings: list | choice | ranges")
    lr_by_params: LrTable = Field(default_factory=dict, description=f"{LR_TABLE_HELP}: {LR_BY_PARAMS}")
    search_alg: SearchAlg = Field(
        "grid", description="grid (lists multiply), random, optuna (TPE) or hyperopt (TPE): one searcher per domain"
    )
    num_samples: int = Field(
        1, ge=1, description="grid: repeats of the search space; random, optuna, hyperopt: trials per domain"
    )
    search_seed: int = Field(0, description="seed of the random search values and of each domain's searcher")
    search_startup: int | None = Field(
        None, ge=1, description="optuna, hyperopt: random trials per domain before the searcher models the results "
        "(default: a third of num_samples, between 2 and 10)",
    )
    trackers: Trackers = Field(default_factory=Trackers, description="experiment trackers: tensorboard, wandb, mlflow")
    report_every: int = Field(
        10, ge=0, description="rebuild the gallery every this many finished trials while running (0: only at the end)"
    )
    early_stopping: EarlyStopping | None = Field(None, description="per-domain ASHA early stopping (off when absent)")
    pack: int | None = Field(
        None, ge=1, description="most trials trained together as one pack, in one process and one batched step "
        f"(1: each trial alone); default {DEFAULT_PACK['cpu']} on CPUs, {DEFAULT_PACK['gpu']} on GPUs, 1 with an "
        "adaptive search_alg",
    )
    resources: Resources = Field(default_factory=Resources, description="resources reserved per pack")
    max_concurrent: int | None = Field(
        None, ge=1, description="most packs running at once (default: as many as the resources allow)"
    )
    retries: int = Field(
        0, ge=0, description="times a pack with a failed member is retried (its unfinished members continue from their "
        "checkpoints)")
    storage: str | None = Field(
        None, description="where Ray Tune keeps its experiment state: a path or s3://... (default: inside results)"
    )
    results_dir: str = Field("results", description="folder of sweep results (relative to this file)")
    select_metric: SelectMetric = Field(
        DEFAULT_SELECT_METRIC, description="metric that picks the best step of a trial and the best trial of a domain"
    )
    collapse_threshold: float = Field(
        DEFAULT_COLLAPSE_THRESHOLD, ge=0, le=1,
        description="a trial whose diversity_ratio falls below this is flagged as mode-collapsed (0 = no check)",
    )
    export_full: bool = Field(
        False, description="best/<domain>/ of a light-mode winner also gets its folded generator.pt (~120 MB at "
        "1024 px), not only its domain.pt"
    )
    demo: DemoSettings = Field(default_factory=DemoSettings, description="replacements applied by --demo")

    _shorthand = field_validator("clip", mode="before")(_clip_list)
    _name = field_validator("name")(_safe_name)


class Domain(TrainOverrides):  # type: ignore[valid-type,misc]
    """One target domain of a catalog; any training setting may be overridden for it."""

    model_config = _STRICT

    name: str = Field(description="folder-safe unique name of the domain")
    source: str | None = Field(None, description="text describing the generator's images (default: catalog source)")
    target: str | None = Field(None, description="text describing the target domain")
    target_images: str | None = Field(None, description="folder of style images (relative to the catalog file)")
    note: str | None = Field(None, description="free text, e.g. where the pair comes from")

    _name = field_validator("name")(_safe_name)


class Catalog(BaseModel):
    """A catalog of domains for one base generator (domains/*.yaml)."""

    model_config = _STRICT

    generator: str | None = Field(None, description="which base generator these prompts are written for (a note)")
    source: str | None = Field(None, description="default source text of the domains")
    domains: list[Domain] = Field(min_length=1, description="the target domains")


OVERRIDE_FIELDS = tuple(TrainSettings.model_fields)


def unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def valid_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at `loc` of `model`, to suggest the closest one for a typo."""
    current: Any = model
    for part in loc:
        current = unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        elif typing.get_origin(current) is list and isinstance(part, int):
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return []
    current = unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []
