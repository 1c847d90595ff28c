"""Typed settings of one adaptation run.

`TrainSettings` holds everything a sweep may search over or a domain may override; `AdaptConfig` adds what
identifies the run (generator, prompts, CLIP ensemble). Field descriptions double as CLI/README help.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from nada_sweep.metric_rules import DEFAULT_SELECT_METRIC, SelectMetric

# The reference scales the user-facing lr by g_reg_every / (g_reg_every + 1) with g_reg_every = 4; we keep
# "lr" as the number users know from the reference's README and apply the same factor inside the optimiser.
REFERENCE_LR_SCALE = 4 / 5

# The names of nada_sweep.adapt.params.PARAMETRIZATIONS (kept here so that settings import no torch).
ParamsName = Literal["full", "stylespace", "stylespace_sparse", "domain_mod", "affine"]
# The learning rate each parametrization trains at unless one is given: NADA's 0.002 for the generator's
# weights, StyleDomain's 0.05 for StyleSpace offsets (td_nada_ffhq_sdelta), HyperDomainNet's 0.1 for domain
# modulation (td_single_ffhq); affine trains weights of the generator's own layers like NADA (no published lr).
LR_BY_PARAMS: dict[str, float] = {
    "full": 0.002, "stylespace": 0.05, "stylespace_sparse": 0.05, "domain_mod": 0.1, "affine": 0.002,
}


# Every number a setting takes is finite unless its field says otherwise: `inf` passes bounds such as gt=0 and
# would only fail once training (or Ray's resource accounting) meets it. Every settings model merges this in.
FINITE_NUMBERS = ConfigDict(allow_inf_nan=False)


class ClipSpec(BaseModel):
    """One member of the CLIP ensemble that guides training."""

    model_config = ConfigDict(extra="forbid", **FINITE_NUMBERS)

    name: str = Field(description="OpenAI CLIP name (ViT-B/32, ...), a local .pt file, or builtin:tiny")
    weight: float = Field(1.0, gt=0, description="weight of this model's loss in the ensemble sum")


MapperGroup = Literal["coarse", "medium", "fine"]
# torch seeds its generators with a 64-bit integer: a larger seed fails only once sampling starts.
MAX_SEED = 2**63 - 1
# Latents rendered together: far above what any GPU holds at 1024 px, low enough that a typo (1000000000) is
# refused up front instead of failing on an allocation of hundreds of GB.
MAX_BATCH = 4096


def _layer_map_alias(value: object) -> object:
    # The first name of "driven" was `true`, which YAML reads as a boolean; old sweep files keep working.
    return "driven" if value is True or value == "true" else value


LayerMap = Annotated[Literal["driven", "reference"], BeforeValidator(_layer_map_alias)]


class MapperSettings(BaseModel):
    """The mapper stage of a run; absent (null) means no mapper."""

    model_config = ConfigDict(extra="forbid", **FINITE_NUMBERS)

    steps: int = Field(200, gt=0, description="mapper training steps (after the adaptation steps)")
    lr: float = Field(0.005, gt=0, description="Adam learning rate of the mapper")
    lambda_l2: float = Field(0.8, ge=0, description="weight of the L2 penalty on the latent offset")
    groups: list[MapperGroup] = Field(
        default_factory=lambda: ["coarse", "medium", "fine"],
        min_length=1,
        description="groups of w indices the mapper may move",
    )
    batch: int = Field(4, gt=0, le=MAX_BATCH, description="latents per mapper step")
    scale: float = Field(0.1, gt=0, description="factor applied to the predicted offset")
    depth: int = Field(4, gt=0, description="linear layers per group MLP")


def layer_selection_on(k: int, auto_layer_iters: int) -> bool:
    """Whether training picks its k trained layers by a W+ search (adaptive layer selection)."""
    return k > 0 and auto_layer_iters > 0


# The two rules that need more than the settings themselves; `adapt` and `validate` both ask them here.
def k_problem(k: int, n_latent: int, generator: str) -> str | None:
    """Why `k` cannot be used with a generator of `n_latent` w indices, or None."""
    if k > n_latent:
        return f"larger than the generator's n_latent ({n_latent} for {generator}); k must be 0..{n_latent}"
    return None


def target_text_problem(selects_layers: bool, lambda_global: float, lambda_manifold: float, target: str | None
                        ) -> str | None:
    """Why settings cannot run without a `target` text (an image-guided target), or None: layer selection's W+
    search and the global and manifold losses score a text. (The mapper aims at the style images instead.)"""
    if target:
        return None
    needs = [(what, fix) for what, fix, on in (
        ("adaptive layer selection (k > 0)", "k: 0", selects_layers),
        ("the global loss (lambda_global > 0)", "lambda_global: 0", lambda_global > 0),
        ("the manifold loss (lambda_manifold > 0)", "lambda_manifold: 0", lambda_manifold > 0)) if on]
    if not needs:
        return None
    return (f"{' and '.join(what for what, _ in needs)} need{'s' if len(needs) == 1 else ''} a `target` text; only "
            f"target_images is given (set {', '.join(fix for _, fix in needs)})")


class TrainSettings(BaseModel):
    """Hyperparameters of one adaptation; every field may be searched or overridden per domain."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, **FINITE_NUMBERS)

    steps: int = Field(300, gt=0, description="training steps (the trial's budget)")
    batch: int = Field(2, gt=0, le=MAX_BATCH, description="latents per training step")
    lr: float = Field(0.002, gt=0, description="learning rate as in the reference README; Adam runs at lr * 4/5")
    k: int = Field(
        0, ge=0, description="adaptive layer selection: train the k most-moved w indices each step (0 = off)"
    )
    auto_layer_iters: int = Field(1, ge=0, description="W+ optimisation steps used to pick the k layers (0 = off)")
    auto_layer_batch: int = Field(8, gt=0, le=MAX_BATCH, description="latents used to pick the k layers")
    auto_layer_every: int = Field(1, gt=0, description="re-pick the k layers every this many steps")
    layer_map: LayerMap = Field(
        "driven",
        description="w index -> layer map: 'driven' = the layers an index really drives; "
        "'reference' = StyleGAN-NADA's off-by-one map, for exact reproduction",
    )
    params: ParamsName = Field(
        "full",
        description="what trains: 'full' = the generator's conv weights (NADA); light modes leave them frozen: "
        "'stylespace' = an offset on every style vector, 'stylespace_sparse' = the 20% largest of those, "
        "'domain_mod' = a per-channel style factor (1 + d), 'affine' = the style layers A",
    )
    mixing: float = Field(0.0, ge=0, le=1, description="style-mixing probability of training latents")
    lambda_direction: float = Field(1.0, ge=0, description="weight of the directional CLIP loss")
    lambda_global: float = Field(0.0, ge=0, description="weight of the global CLIP loss")
    lambda_manifold: float = Field(0.0, ge=0, description="weight of the manifold (similarity-preserving) loss")
    lambda_patch: float = Field(0.0, ge=0, description="weight of the patch-level directional loss")
    lambda_indomain: float = Field(
        0.0, ge=0, description="weight of HyperDomainNet's in-domain angle-consistency loss (needs batch >= 2)"
    )
    eval_every: int = Field(50, gt=0, description="evaluate, save samples and report metrics every this many steps")
    n_samples: int = Field(8, gt=0, le=64, description="fixed latents rendered in each sample grid")
    n_eval: int = Field(16, gt=1, le=MAX_BATCH, description="fixed latents on which metrics are computed")
    sample_truncation: float = Field(0.7, gt=0, le=1, description="truncation of sample/eval latents")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of training latents and noise")
    sample_seed: int = Field(
        0, ge=0, le=MAX_SEED, description="seed of the fixed sample/eval latents (keep it equal across trials to compare them)"
    )
    mapper: MapperSettings | None = Field(
        None, description="latent-mapper stage after the adaptation steps (off when absent)"
    )
    faithful: bool = Field(
        False,
        description="reproduce the reference's order of work (frozen side every step, weight gradients during "
        "layer selection) -- slower, same math; for comparison",
    )
    cuda_tf32: bool = Field(
        True, description="on CUDA: TF32 matmuls and convolutions (Ampere or newer): faster, ~1e-3 relative rounding"
    )
    cuda_bf16_clip: bool = Field(
        False, description="on CUDA: run the CLIP forward passes of training steps under bf16 autocast"
    )
    compile: bool = Field(
        False,
        description="torch.compile the trained generator (compile time counts in the run); not with adaptive "
        "layer selection, whose changing set of trained layers would recompile it",
    )

    @property
    def selects_layers(self) -> bool:
        return layer_selection_on(self.k, self.auto_layer_iters)

    @model_validator(mode="after")
    def _samples_are_eval_latents(self) -> TrainSettings:
        if self.n_samples > self.n_eval:
            raise ValueError(f"n_samples ({self.n_samples}) must not exceed n_eval ({self.n_eval})")
        return self

    @model_validator(mode="after")
    def _some_loss_weighted(self) -> TrainSettings:
        lambdas = ("lambda_direction", "lambda_global", "lambda_manifold", "lambda_patch", "lambda_indomain")
        if not any(getattr(self, name) for name in lambdas):
            raise ValueError(f"{', '.join(lambdas)} are all 0: nothing would guide the training; give one a "
                             "weight > 0")
        return self

    @model_validator(mode="after")
    def _indomain_needs_pairs(self) -> TrainSettings:
        if self.lambda_indomain > 0 and self.batch < 2:
            raise ValueError(f"lambda_indomain compares the angles between a batch's samples: it needs batch >= 2 "
                             f"(got batch {self.batch})")
        return self

    @model_validator(mode="after")
    def _compile_without_selection(self) -> TrainSettings:
        # Which parameters require gradients is part of what torch.compile specialises on: every new set of
        # trained layers compiles again, and past torch's recompile limit the run silently goes on uncompiled.
        if self.compile and self.params != "full":
            raise ValueError(f"compile: true compiles the fine-tuned generator; params: {self.params!r} trains "
                             "offsets applied by per-call hooks, which torch.compile would trace again every step; "
                             "set compile: false")
        if self.compile and self.selects_layers:
            raise ValueError(
                f"compile: true cannot be combined with adaptive layer selection (k: {self.k}, auto_layer_iters: "
                f"{self.auto_layer_iters}): each new set of trained layers makes torch compile the generator again "
                "until its recompile limit, after which the run goes on uncompiled; set compile: false, or k: 0")
        return self


class AdaptConfig(TrainSettings):
    """Everything one adaptation run needs."""

    generator: str = Field(
        "builtin:tiny", description="rosinality-format .pt file, NVIDIA StyleGAN2-ADA .pkl, or builtin:tiny"
    )
    source: str = Field("photo", description="text describing the generator's domain")
    target: str | None = Field(None, description="text describing the target domain")
    target_images: str | None = Field(
        None, description="folder of style images: image-guided target instead of target text"
    )
    clip: list[ClipSpec] = Field(
        default_factory=lambda: [ClipSpec(name="ViT-B/32", weight=1.0)],
        min_length=1,
        description="CLIP ensemble guiding the training",
    )
    eval_clip: str | None = Field(
        None, description="CLIP model that computes the metrics (default: the first training model)"
    )
    select_metric: SelectMetric = Field(
        DEFAULT_SELECT_METRIC, description="eval metric that picks the best step (its weights go to generator.pt)"
    )
    device: str = Field("auto", description="auto (CUDA when available), cpu, cuda, cuda:N")

    @field_validator("source", "target")
    @classmethod
    def _not_blank(cls, text: str | None) -> str | None:
        if text is not None and not text.strip():
            raise ValueError("is empty; give a short text such as 'photo' or 'pencil sketch'")
        return text

    @model_validator(mode="after")
    def _needs_a_target(self) -> AdaptConfig:
        if not self.target and not self.target_images:
            raise ValueError("give a target text ('target') or a folder of style images ('target_images')")
        return self

    @property
    def eval_clip_name(self) -> str:
        return self.eval_clip or self.clip[0].name


def changed_settings(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The settings in which a run folder's recorded config differs from `current` (both AdaptConfig data).

    The record is read through AdaptConfig first, so a record written by an older version (a setting it did not
    have yet, an old name such as layer_map `true`) only differs where the run really would.
    """
    try:
        recorded = AdaptConfig.model_validate(dict(recorded)).model_dump(mode="json")
    except ValidationError:
        pass
    return sorted(key for key in set(recorded) | set(current) if recorded.get(key) != current.get(key))
