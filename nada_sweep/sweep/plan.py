"""The resolved sweep: every path absolute, every domain's merged settings, every trial, as `run` uses them.

Written to results/<sweep>/sweep.resolved.yaml before any work, so a results folder says what it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nada_sweep import metric_rules
from nada_sweep.adapt.settings import LR_BY_PARAMS, AdaptConfig, ClipSpec
from nada_sweep.paths import user_path
from nada_sweep.sweep import space
from nada_sweep.sweep.schema import ADAPTIVE_SEARCH, DEFAULT_PACK, DEMO_LR_BY_PARAMS, SweepFile
from nada_sweep.sweep.yaml_doc import YamlDoc


@dataclass
class ResolvedDomain:
    name: str
    source: str
    target: str | None
    target_images: str | None  # absolute
    settings: dict[str, Any]  # every TrainSettings field: defaults < sweep train < domain < demo train
    index: int  # position in the catalog's domain list
    lr_given: bool = False  # lr set by the sweep's train:, the domain or demo.train: no per-parametrization lr


@dataclass
class ResolvedSweep:
    """Everything `run` needs, every path absolute; written to results/<name>/sweep.resolved.yaml."""

    sweep_file: Path
    catalog_file: Path
    config: SweepFile  # with the --demo replacements applied
    demo: bool
    generator: str  # absolute path or builtin:NAME
    n_latent: int
    generator_size: int
    clip: list[ClipSpec]  # names that are files made absolute
    eval_clip: str | None
    domains: list[ResolvedDomain]
    search: list[space.SearchDim]
    trials: list[space.TrialPlan]
    sweep_doc: YamlDoc | None = None  # the sweep file as read: the line of each field, for messages

    def where(self, loc: tuple[Any, ...]) -> str:
        """`file:line` of a field of the sweep file (the file alone when its line is not known)."""
        line = self.sweep_doc.line(loc) if self.sweep_doc else None
        return f"{self.sweep_file}:{line}" if line else str(self.sweep_file)

    @property
    def resources_loc(self) -> tuple[str, ...]:
        """Where the resources in effect are set: demo.resources with --demo, else resources."""
        return ("demo", "resources") if self.demo else ("resources",)

    @property
    def name(self) -> str:
        return self.config.name + ("-demo" if self.demo else "")

    @property
    def results_root(self) -> Path:
        return user_path(self.config.results_dir, self.sweep_file) / self.name

    @property
    def storage(self) -> str:
        if self.config.storage is None:
            return str(self.results_root / "tune")
        if "://" in self.config.storage:
            return self.config.storage
        return str(user_path(self.config.storage, self.sweep_file))

    @property
    def select_mode(self) -> str:
        return metric_rules.mode(self.config.select_metric)

    def clip_names(self) -> list[str]:
        """Every CLIP model the trials load: the guidance ensemble and the evaluation model."""
        return list(dict.fromkeys([spec.name for spec in self.clip] + [self.eval_clip or self.clip[0].name]))

    @property
    def lr_table(self) -> dict[str, float]:
        """The lr of each parametrization, for trials whose lr is not given."""
        if self.demo:
            return {**DEMO_LR_BY_PARAMS, **self.config.demo.lr_by_params}
        return {**LR_BY_PARAMS, **self.config.lr_by_params}

    @property
    def adaptive(self) -> bool:
        """Whether a searcher per domain picks the trials as results come in (their list is not known ahead)."""
        return self.config.search_alg in ADAPTIVE_SEARCH

    @property
    def pack_size(self) -> int:
        """Most trials per pack: `pack` as given, else DEFAULT_PACK for where packs train (1 with an adaptive
        search, which suggests one trial at a time)."""
        if self.config.pack is not None:
            return self.config.pack
        if self.adaptive:
            return 1
        return DEFAULT_PACK["gpu" if self.config.resources.gpus > 0 else "cpu"]

    def packs_at_once(self, cpus: float, gpus: float) -> int:
        """How many packs train at the same time on a cluster of `cpus` CPUs and `gpus` GPUs (max_concurrent caps
        it); at least 1."""
        resources = self.config.resources
        fits = int(cpus // resources.cpus)
        if resources.gpus > 0:
            fits = min(fits, int(gpus // resources.gpus))
        if self.config.max_concurrent:
            fits = min(fits, self.config.max_concurrent)
        return max(1, fits)

    @property
    def trial_total(self) -> int:
        return len(self.domains) * self.config.num_samples if self.adaptive else len(self.trials)

    @property
    def search_startup(self) -> int:
        """Random trials per domain before an adaptive searcher models the results."""
        return self.config.search_startup or min(10, max(2, self.config.num_samples // 3))

    @property
    def mlflow_uri(self) -> str | None:
        """The MLflow tracking URI when MLflow is on: a URI as given, a path made absolute, else <results>/mlruns."""
        settings = self.config.trackers.mlflow
        if settings is None:
            return None
        uri = settings.tracking_uri
        if uri is None:
            return (self.results_root / "mlruns").as_uri()
        return uri if ":" in uri else user_path(uri, self.sweep_file).as_uri()

    def probe_trials(self) -> list[space.TrialPlan]:
        """Stand-ins for an adaptive search's trials: each searched value at its extremes (a choice: each value).

        Every setting a searcher may suggest is checked on them before anything starts, and they bound what the
        trials can need (the most steps, for early stopping and the shared bank).
        """
        first = {dim.field: dim.values[0] for dim in self.search}
        probes = []
        for domain in self.domains:
            candidates = [first] + [{**first, dim.field: value} for dim in self.search for value in dim.values]
            unique = [params for i, params in enumerate(candidates) if params not in candidates[:i]]
            probes += [space.TrialPlan(domain.name, "probe", 0, params) for params in unique]
        return probes

    def domain(self, name: str) -> ResolvedDomain:
        return next(domain for domain in self.domains if domain.name == name)

    def trial_dir(self, trial: space.TrialPlan) -> Path:
        return self.results_root / "trials" / trial.domain / trial.name

    def adapt_config(self, trial: space.TrialPlan) -> AdaptConfig:
        """The complete settings of one trial; the device is left to the trial ("auto": CUDA when given a GPU)."""
        domain = self.domain(trial.domain)
        settings = {**domain.settings, **trial.params}
        settings["seed"] = settings["seed"] + trial.repeat
        if "lr" not in trial.params and not domain.lr_given:
            settings["lr"] = self.lr_table[settings["params"]]
        return AdaptConfig(
            **settings,
            generator=self.generator,
            source=domain.source,
            target=domain.target,
            target_images=domain.target_images,
            clip=self.clip,
            eval_clip=self.eval_clip,
            select_metric=self.config.select_metric,
            device="auto",
        )

    def to_yaml(self) -> str:
        """The resolved sweep as YAML: what was run, with every default filled in."""
        data = {
            "name": self.name,
            "demo": self.demo,
            "sweep_file": str(self.sweep_file),
            "catalog_file": str(self.catalog_file),
            "generator": self.generator,
            "generator_size": self.generator_size,
            "n_latent": self.n_latent,
            "clip": [spec.model_dump() for spec in self.clip],
            "eval_clip": self.eval_clip or self.clip[0].name,
            "select_metric": self.config.select_metric,
            "select_mode": self.select_mode,
            "collapse_threshold": self.config.collapse_threshold,
            "export_full": self.config.export_full,
            "search": {dim.field: dim.to_yaml() for dim in self.search},
            "lr_by_params": self.lr_table,
            "search_alg": self.config.search_alg,
            "num_samples": self.config.num_samples,
            "search_seed": self.config.search_seed,
            "search_startup": self.search_startup if self.adaptive else None,
            "trial_total": self.trial_total,
            "trackers": self.config.trackers.model_dump() | ({"mlflow": {"tracking_uri": self.mlflow_uri}}
                                                              if self.mlflow_uri else {}),
            "report_every": self.config.report_every,
            "early_stopping": self.config.early_stopping.model_dump() if self.config.early_stopping else None,
            "pack": self.pack_size,
            "resources": self.config.resources.model_dump(),
            "max_concurrent": self.config.max_concurrent,
            "retries": self.config.retries,
            "results_root": str(self.results_root),
            "storage": self.storage,
            "domains": [
                {
                    "name": d.name,
                    "source": d.source,
                    "target": d.target,
                    "target_images": d.target_images,
                    "settings": d.settings,
                }
                for d in self.domains
            ],
            "trials": [
                {
                    "domain": t.domain,
                    "trial": t.name,
                    "dir": str(self.trial_dir(t).relative_to(self.results_root)),
                    "params": t.params,
                    "lr": self.adapt_config(t).lr,
                }
                for t in self.trials
            ],
        }
        header = "# nada-sweep: the resolved sweep, written before any work (edit sweep.yaml, not this file)\n"
        if self.demo:
            header += "# DEMO: built-in tiny random-weight models; results show the pipeline works, nothing more\n"
        return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
