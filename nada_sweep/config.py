"""The sweep file and its domain catalog: schema, YAML loading with line numbers, and resolution into trials.

`load_sweep(path)` reads a sweep file (sweep.yaml) and the catalog it names (domains/*.yaml), checks everything
that can be checked before any training -- unknown keys, types, ranges, folder-safe unique domain names, prompts
that fit CLIP's context, k against the generator's n_latent -- and returns a `ResolvedSweep`: absolute paths, the
merged settings of every domain and the full list of trials. Every problem is reported as
`file:line: field: what is wrong (got value)`, all problems of a file at once.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from nada_sweep.adapt.settings import AdaptConfig, ClipSpec, SelectMetric, TrainSettings, layer_selection_on
from nada_sweep.errors import UserError
from nada_sweep.models.presets import GENERATOR_PRESETS
from nada_sweep.report.metrics import LOWER_IS_BETTER
from nada_sweep.sweep import space

BUILTIN_PREFIX = "builtin:"

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SAFE_NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 characters"

_STRICT = ConfigDict(extra="forbid", strict=True)

# --demo's step budget: small enough that a whole catalog runs in minutes on two CPU cores.
DEMO_TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 20, "eval_every": 10, "n_eval": 4, "n_samples": 4, "auto_layer_batch": 2,
}


def _safe_name(value: str) -> str:
    if not SAFE_NAME.match(value):
        raise ValueError(f"must be usable as a folder name: {SAFE_NAME_RULE}")
    return value


def _clip_list(value: Any) -> Any:
    # `clip: [ViT-B/32, ViT-B/16]` is shorthand for mappings with weight 1.0.
    if isinstance(value, list):
        return [{"name": item} if isinstance(item, str) else item for item in value]
    return value


def _constrained(info: Any) -> Any:
    """A field's type with its constraints (gt=0, ...) attached, usable outside its model."""
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _overrides_model(name: str) -> type[BaseModel]:
    """TrainSettings with every field optional: what a sweep's `train:` or a domain may set."""
    fields: dict[str, Any] = {
        key: (_constrained(info), Field(None, description=info.description))
        for key, info in TrainSettings.model_fields.items()
    }
    return create_model(name, __config__=_STRICT, **fields)


TrainOverrides = _overrides_model("TrainOverrides")


class Resources(BaseModel):
    """What one trial reserves on the Ray cluster."""

    model_config = _STRICT

    cpus: float = Field(1, gt=0, description="CPU cores per trial (torch uses this many threads)")
    gpus: float = Field(
        0, ge=0, description="GPUs per trial; a fraction (0.5) lets several trials share one GPU; 0 = CPU only"
    )

    @field_validator("gpus")
    @classmethod
    def _whole_above_one(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError("above 1 must be a whole number of GPUs (Ray shares only single GPUs)")
        return value


class EarlyStopping(BaseModel):
    """ASHA early stopping; trials are only compared with trials of the same domain."""

    model_config = _STRICT

    metric: SelectMetric | None = Field(None, description="metric compared at each rung (default: select_metric)")
    grace_steps: int = Field(100, gt=0, description="no trial is stopped before this many steps")
    reduction_factor: float = Field(3, gt=1, description="keep the best 1/reduction_factor of trials at each rung")


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
    resources: Resources = Field(default_factory=Resources, description="resources per trial in --demo")

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
    num_samples: int = Field(1, ge=1, description="repeats of the search space (random values drawn anew each time)")
    search_seed: int = Field(0, description="seed of the random search values")
    early_stopping: EarlyStopping | None = Field(None, description="per-domain ASHA early stopping (off when absent)")
    resources: Resources = Field(default_factory=Resources, description="resources reserved per trial")
    max_concurrent: int | None = Field(
        None, ge=1, description="most trials running at once (default: as many as the resources allow)"
    )
    retries: int = Field(0, ge=0, description="times a failed trial is retried (it continues from its checkpoint)")
    storage: str | None = Field(
        None, description="where Ray Tune keeps its experiment state: a path or s3://... (default: inside results)"
    )
    results_dir: str = Field("results", description="folder of sweep results (relative to this file)")
    select_metric: SelectMetric = Field(
        "clip_direction", description="metric that picks the best step of a trial and the best trial of a domain"
    )
    collapse_threshold: float = Field(
        0.5, ge=0, le=1,
        description="a trial whose diversity_ratio falls below this is flagged as mode-collapsed (0 = no check)",
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


# ----------------------------------------------------------------------------------------------------------
# YAML with line numbers


class _Loader(yaml.SafeLoader):
    """Safe YAML that also reads 2e-3 as a number (YAML 1.1 demands a dot: 2.0e-3) -- a classic lr typo."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass
class YamlDoc:
    """A parsed YAML file and the line of every key and list item, by path."""

    path: Path
    data: Any
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict)

    def line(self, loc: Iterable[Any]) -> int | None:
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return None


def load_yaml(path: Path, what: str) -> YamlDoc:
    """Parse `path`; syntax errors, duplicate keys and unreadable files become UserError with the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a {what} YAML file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read the {what} file: {error}") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        doc = YamlDoc(path, None)
        if node is not None:
            _record_lines(doc, node, (), set())
            doc.data = loader.construct_document(node)
        return doc
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        detail = error.problem or error.context or "cannot parse"
        if error.context and error.problem:
            started = f" on line {error.context_mark.line + 1}" if error.context_mark else ""
            detail += f" ({error.context}{started})"
        raise UserError(f"{where}: YAML syntax error: {detail}") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path}: YAML syntax error: {error}") from None
    finally:
        loader.dispose()


def _record_lines(doc: YamlDoc, node: yaml.Node, loc: tuple[Any, ...], active: set[int]) -> None:
    if id(node) in active:  # a recursive alias; its lines are already known
        return
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in seen:
                raise UserError(f"{doc.path}:{line}: {_field_name((*loc, key))}: duplicate key "
                                f"(first given on line {seen[key]})")
            seen[key] = line
            doc.lines[(*loc, key)] = line
            _record_lines(doc, value_node, (*loc, key), active)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            doc.lines[(*loc, index)] = item.start_mark.line + 1
            _record_lines(doc, item, (*loc, index), active)
    active.discard(id(node))


# ----------------------------------------------------------------------------------------------------------
# Problems: collected per file, reported together

_NO_VALUE = object()


@dataclass
class _Problems:
    doc: YamlDoc
    messages: list[str] = field(default_factory=list)

    def add(self, loc: tuple[Any, ...], message: str, value: Any = _NO_VALUE) -> None:
        where = self.where(loc)
        shown = "" if value is _NO_VALUE or isinstance(value, (dict, list)) else f" (got {value!r})"
        self.messages.append(f"{where}: {self._label(loc)}: {message}{shown}")

    def where(self, loc: tuple[Any, ...]) -> str:
        line = self.doc.line(loc)
        return f"{self.doc.path}:{line}" if line else str(self.doc.path)

    def _label(self, loc: tuple[Any, ...]) -> str:
        label = _field_name(loc)
        if len(loc) >= 2 and loc[0] == "domains" and isinstance(loc[1], int):
            domains = self.doc.data.get("domains") if isinstance(self.doc.data, dict) else None
            if isinstance(domains, list) and loc[1] < len(domains) and isinstance(domains[loc[1]], dict):
                name = domains[loc[1]].get("name")
                if isinstance(name, str):
                    label += f" (domain {name!r})"
        return label

    def add_validation_error(self, error: pydantic.ValidationError, model: type[BaseModel],
                             prefix: tuple[Any, ...] = ()) -> None:
        for problem in error.errors():
            loc = (*prefix, *problem["loc"])
            if problem["type"] == "extra_forbidden":
                valid = _valid_keys(model, problem["loc"][:-1])
                hint = space.did_you_mean(problem["loc"][-1], valid) if valid else ""
                self.add(loc, f"unknown key{hint}")
            elif problem["type"] == "missing":
                self.add(loc, "required, but missing")
            else:
                self.add(loc, problem["msg"].removeprefix("Value error, "), problem.get("input", _NO_VALUE))

    def raise_if_any(self) -> None:
        if self.messages:
            raise UserError("\n".join(self.messages))


def _field_name(loc: Iterable[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _unwrap(annotation: Any) -> Any:
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


def _valid_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at `loc` of `model`, to suggest the closest one for a typo."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        elif typing.get_origin(current) is list and isinstance(part, int):
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


# ----------------------------------------------------------------------------------------------------------
# The resolved sweep


@dataclass
class ResolvedDomain:
    name: str
    source: str
    target: str | None
    target_images: str | None  # absolute
    settings: dict[str, Any]  # every TrainSettings field: defaults < sweep train < domain < demo train
    index: int  # position in the catalog's domain list


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

    @property
    def name(self) -> str:
        return self.config.name + ("-demo" if self.demo else "")

    @property
    def results_root(self) -> Path:
        return _relative_to(self.sweep_file, self.config.results_dir) / self.name

    @property
    def storage(self) -> str:
        if self.config.storage is None:
            return str(self.results_root / "tune")
        if "://" in self.config.storage:
            return self.config.storage
        return str(_relative_to(self.sweep_file, self.config.storage))

    @property
    def select_mode(self) -> str:
        return "min" if self.config.select_metric in LOWER_IS_BETTER else "max"

    def domain(self, name: str) -> ResolvedDomain:
        return next(domain for domain in self.domains if domain.name == name)

    def trial_dir(self, trial: space.TrialPlan) -> Path:
        return self.results_root / "trials" / trial.domain / trial.name

    def adapt_config(self, trial: space.TrialPlan) -> AdaptConfig:
        """The complete settings of one trial; the device is left to the trial ("auto": CUDA when given a GPU)."""
        domain = self.domain(trial.domain)
        settings = {**domain.settings, **trial.params}
        settings["seed"] = settings["seed"] + trial.repeat
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
            "search": {dim.field: dim.to_yaml() for dim in self.search},
            "num_samples": self.config.num_samples,
            "search_seed": self.config.search_seed,
            "early_stopping": self.config.early_stopping.model_dump() if self.config.early_stopping else None,
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
                }
                for t in self.trials
            ],
        }
        header = "# nada-sweep: the resolved sweep, written before any work (edit sweep.yaml, not this file)\n"
        if self.demo:
            header += "# DEMO: built-in tiny random-weight models; results show the pipeline works, nothing more\n"
        return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _relative_to(anchor_file: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else (anchor_file.parent / path).resolve()


# ----------------------------------------------------------------------------------------------------------
# Loading


def load_sweep(path: str | Path, *, demo: bool = False) -> ResolvedSweep:
    """Load and check a sweep file and its catalog; raise UserError naming file, line, field and value.

    Reads the generator file to learn its n_latent (k is checked against it) but loads no CLIP weights.
    """
    sweep_file = Path(path).expanduser().resolve()
    doc = load_yaml(sweep_file, "sweep")
    problems = _Problems(doc)
    if not isinstance(doc.data, dict):
        what = "empty" if doc.data is None else f"a {type(doc.data).__name__}"
        raise UserError(f"{sweep_file}: the sweep file is {what}; expected a mapping with name, generator, "
                        "clip, catalog, ... (see sweep.yaml in the repository)")
    try:
        config = SweepFile.model_validate(doc.data)
    except pydantic.ValidationError as error:
        problems.add_validation_error(error, SweepFile)
        problems.raise_if_any()
        raise  # unreachable: a ValidationError holds at least one problem

    search_raw: dict[str, tuple[tuple[Any, ...], Any]] = {name: ((), spec) for name, spec in config.search.items()}
    if demo:
        search_raw |= {name: (("demo",), spec) for name, spec in (config.demo.search or {}).items()}
    dims, dim_prefix = _check_search(search_raw, problems)

    sweep_train = config.train.model_dump(exclude_unset=True)
    demo_train = {**DEMO_TRAIN_DEFAULTS, **config.demo.train.model_dump(exclude_unset=True)} if demo else {}
    try:
        TrainSettings(**{**sweep_train, **demo_train})  # cross-field rules (n_samples <= n_eval) of the defaults
    except pydantic.ValidationError as error:
        for problem in error.errors():
            key = problem["loc"][0] if problem["loc"] else None
            loc = ("demo", "train", key) if key in demo_train else ("train", key) if key else ("train",)
            problems.add(loc, problem["msg"].removeprefix("Value error, "), problem.get("input", _NO_VALUE))
    if demo:
        config = config.model_copy(update={
            "generator": config.demo.generator,
            "clip": config.demo.clip,
            "eval_clip": config.demo.eval_clip,
            "resources": config.demo.resources,
        })
    model_loc: tuple[Any, ...] = ("demo",) if demo else ()
    clip_specs = [
        spec.model_copy(update={"name": _resolve_clip(spec.name, sweep_file, (*model_loc, "clip", i), problems)})
        for i, spec in enumerate(config.clip)
    ]
    eval_clip = (_resolve_clip(config.eval_clip, sweep_file, (*model_loc, "eval_clip"), problems)
                 if config.eval_clip else None)
    catalog_file = _relative_to(sweep_file, config.catalog)
    if not catalog_file.is_file():
        problems.add(("catalog",), f"file not found: {catalog_file}", config.catalog)
    problems.raise_if_any()

    catalog_doc, domains = _load_catalog(catalog_file, sweep_train, demo_train, dims, doc)
    generator, loaded = _resolve_generator(config, sweep_file, problems.where((*model_loc, "generator")))
    n_latent = loaded.generator.n_latent
    _check_k(domains, dims, dim_prefix, n_latent, generator, problems, _Problems(catalog_doc))

    trials = space.expand([d.name for d in domains], dims, config.num_samples, config.search_seed)
    if not trials:
        raise UserError(f"{sweep_file}: the sweep has zero trials")
    resolved = ResolvedSweep(
        sweep_file=sweep_file,
        catalog_file=catalog_file,
        config=config,
        demo=demo,
        generator=generator,
        n_latent=n_latent,
        generator_size=loaded.spec.size,
        clip=clip_specs,
        eval_clip=eval_clip,
        domains=domains,
        search=dims,
        trials=trials,
    )
    _check_trials(resolved, problems, dim_prefix)
    return resolved


def _check_trials(sweep: ResolvedSweep, problems: _Problems, dim_prefix: dict[str, tuple[Any, ...]]) -> None:
    """Every trial's complete settings, for rules across fields (a searched n_samples above n_eval, ...)."""
    for trial in sweep.trials:
        try:
            sweep.adapt_config(trial)
        except pydantic.ValidationError as error:
            message = "; ".join(p["msg"].removeprefix("Value error, ") for p in error.errors())
            field = next(iter(trial.params), None)
            loc = (*dim_prefix.get(field, ()), "search", field) if field else ("train",)
            problems.add(loc, f"trial {trial.domain}/{trial.name}: {message}")
    problems.raise_if_any()


def _check_search(raw: dict[str, tuple[tuple[Any, ...], Any]], problems: _Problems
                  ) -> tuple[list[space.SearchDim], dict[str, tuple[Any, ...]]]:
    """Search dimensions with every value checked against its setting's schema; also where each was given."""
    dims, prefixes = [], {}
    for name, (prefix, spec) in raw.items():
        try:
            (dim,) = space.parse_search({name: spec}, OVERRIDE_FIELDS)
        except space.SpecError as error:
            problems.add((*prefix, *error.loc), error.message, error.value if error.show_value else _NO_VALUE)
            continue
        info = TrainSettings.model_fields[dim.field]
        kind_loc = (*prefix, "search", name) + ((dim.kind,) if dim.kind != "grid" else ())
        base_type = _unwrap(info.annotation)
        if dim.kind in space.RANGE_KINDS and base_type not in (int, float):
            problems.add(kind_loc, f"{dim.kind} needs a numeric setting; {name} is not one: list its values")
            continue
        if dim.kind == "uniform" and base_type is int:
            problems.add(kind_loc, f"{name} takes whole numbers: use randint or a list")
            continue
        adapter = pydantic.TypeAdapter(_constrained(info), config=ConfigDict(strict=True))
        valid = True
        for index, value in enumerate(dim.values):
            try:
                adapter.validate_python(value)
            except pydantic.ValidationError as error:
                valid = False
                problems.add((*kind_loc, index), error.errors()[0]["msg"], value)
        if valid:
            dims.append(dim)
            prefixes[dim.field] = prefix
    return dims, prefixes


def _load_catalog(catalog_file: Path, sweep_train: dict[str, Any], demo_train: dict[str, Any],
                  dims: list[space.SearchDim], sweep_doc: YamlDoc) -> tuple[YamlDoc, list[ResolvedDomain]]:
    doc = load_yaml(catalog_file, "catalog")
    problems = _Problems(doc)
    if doc.data is None or (isinstance(doc.data, dict) and not doc.data.get("domains")):
        raise UserError(f"{catalog_file}: the catalog is empty; it needs a list `domains:` with at least one "
                        "{name, source, target} entry")
    if not isinstance(doc.data, dict):
        raise UserError(f"{catalog_file}: expected a mapping with `domains:` (a list), got a "
                        f"{type(doc.data).__name__}")
    try:
        catalog = Catalog.model_validate(doc.data)
    except pydantic.ValidationError as error:
        problems.add_validation_error(error, Catalog)
        problems.raise_if_any()
        raise
    if catalog.source is not None:
        _check_prompt(catalog.source, ("source",), problems)

    searched = {dim.field for dim in dims}
    domains = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(catalog.domains):
        loc: tuple[Any, ...] = ("domains", index)
        if entry.name.lower() in seen:
            problems.add((*loc, "name"), f"duplicate domain name (same as domains[{seen[entry.name.lower()]}]; "
                         "names become folders, so they must differ even ignoring case)", entry.name)
            continue
        seen[entry.name.lower()] = index
        overrides = entry.model_dump(include=set(OVERRIDE_FIELDS), exclude_unset=True)
        clash = sorted(searched & set(overrides))
        for name in clash:
            problems.add((*loc, name), f"is also searched by the sweep ({sweep_doc.path}:"
                         f"{sweep_doc.line(('search', name))}); a domain cannot override a searched setting: "
                         "remove one of the two")
        source = entry.source if entry.source is not None else catalog.source
        if source is None:
            problems.add(loc, "has no `source` text and the catalog sets no default `source`")
        elif entry.source is not None:
            _check_prompt(entry.source, (*loc, "source"), problems)
        if entry.target is None and entry.target_images is None:
            problems.add(loc, "needs a `target` text or a `target_images` folder")
        if entry.target is not None:
            _check_prompt(entry.target, (*loc, "target"), problems)
        images = _check_images(entry.target_images, catalog_file, (*loc, "target_images"), problems)
        if clash or source is None:
            continue
        try:
            settings = TrainSettings(**{**sweep_train, **overrides, **demo_train})
        except pydantic.ValidationError as error:
            for problem in error.errors():
                key = problem["loc"][0] if problem["loc"] else None
                where = (*loc, key) if key in overrides else loc
                label = f"{key}: " if key and key not in overrides else ""
                message = problem["msg"].removeprefix("Value error, ")
                problems.add(where, label + message, problem.get("input", _NO_VALUE))
            continue
        domains.append(ResolvedDomain(entry.name, source, entry.target, images, settings.model_dump(mode="json"),
                                      index))
    problems.raise_if_any()
    return doc, domains


def _check_prompt(text: str, loc: tuple[Any, ...], problems: _Problems) -> None:
    from nada_sweep.models.clip_models import check_prompt

    label = _field_name(loc)
    try:
        check_prompt(text, label)
    except UserError as error:
        problems.add(loc, str(error).removeprefix(f"{label}: "))


def _check_images(value: str | None, catalog_file: Path, loc: tuple[Any, ...], problems: _Problems) -> str | None:
    if value is None:
        return None
    folder = _relative_to(catalog_file, value)
    if not folder.is_dir():
        problems.add(loc, f"folder not found: {folder}", value)
        return None
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file()):
        problems.add(loc, f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})", value)
        return None
    return str(folder)


def _resolve_generator(config: SweepFile, sweep_file: Path, where: str) -> tuple[str, Any]:
    """The generator's absolute path (or builtin name) and the loaded generator (its architecture)."""
    from nada_sweep.models.checkpoints import load_generator

    value = config.generator
    if value.startswith(BUILTIN_PREFIX):
        resolved = value
    elif value in GENERATOR_PRESETS:
        path = _relative_to(sweep_file, config.weights_dir) / GENERATOR_PRESETS[value]
        if not path.is_file():
            raise UserError(
                f"{where}: generator: preset {value!r} means the file {path}, which does not exist. Put the "
                f"rosinality-format {GENERATOR_PRESETS[value]} there (weights_dir: {config.weights_dir}; "
                "`nada-sweep models` says where to get it) or set "
                "generator to the path of your file; `--demo` runs the same sweep on built-in tiny models"
            )
        resolved = str(path)
    else:
        path = _relative_to(sweep_file, value)
        if not path.is_file():
            raise UserError(
                f"{where}: generator: file not found: {path} (got {value!r}); give a rosinality-format .pt file, "
                f"an NVIDIA StyleGAN2-ADA .pkl, a preset ({', '.join(GENERATOR_PRESETS)}) kept in weights_dir, "
                "or builtin:tiny"
            )
        resolved = str(path)
    try:
        loaded = load_generator(resolved)
    except UserError as error:
        raise UserError(f"{where}: generator: {str(error).removeprefix('generator: ')}") from None
    return resolved, loaded


def _resolve_clip(name: str, sweep_file: Path, loc: tuple[Any, ...], problems: _Problems) -> str:
    """A CLIP name as trials will use it: known names kept, files made absolute. No weights are loaded here."""
    import clip

    from nada_sweep.models.clip_models import BUILTIN_TINY

    if name == BUILTIN_TINY or name in clip.available_models():
        return name
    path = _relative_to(sweep_file, name)
    if path.is_file():
        return str(path)
    close = [m for m in clip.available_models() if m.lower() == name.lower()]
    hint = f"did you mean {close[0]!r}? " if close else ""
    problems.add(loc, f"not a CLIP model name or an existing file; {hint}use one of "
                 f"{', '.join(clip.available_models())}, {BUILTIN_TINY}, or a path to a .pt file", name)
    return name


def _check_k(domains: list[ResolvedDomain], dims: list[space.SearchDim], dim_prefix: dict[str, tuple[Any, ...]],
             n_latent: int, generator: str, problems: _Problems, catalog_problems: _Problems) -> None:
    """k within 0..n_latent everywhere it is set, and no layer selection without a target text."""
    rule = f"larger than the generator's n_latent ({n_latent} for {generator}); k must be 0..{n_latent}"
    k_dim = next((dim for dim in dims if dim.field == "k"), None)
    k_values: list[int] = []
    if k_dim is not None:
        loc = (*dim_prefix["k"], "search", "k") + ((k_dim.kind,) if k_dim.kind != "grid" else ())
        k_values = list(k_dim.values) if k_dim.kind != "randint" else [k_dim.values[1]]
        for index, value in enumerate(k_dim.values):
            if value > n_latent:
                problems.add((*loc, index), rule, value)
    for domain in domains:
        loc = ("domains", domain.index)
        if k_dim is None and domain.settings["k"] > n_latent:
            catalog_problems.add((*loc, "k"), rule, domain.settings["k"])
        selects = any(layer_selection_on(k, domain.settings["auto_layer_iters"])
                      for k in (k_values or [domain.settings["k"]]))
        if selects and domain.target is None:
            catalog_problems.add(loc, "adaptive layer selection (k > 0) needs a `target` text; this domain only "
                                 "has target_images (set k: 0 for it)")
    problems.messages.extend(catalog_problems.messages)
    problems.raise_if_any()
