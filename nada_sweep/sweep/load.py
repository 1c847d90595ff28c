"""Loading a sweep file and its catalog: every check that can run before any training, errors located.

`load_sweep(path)` reads a sweep file (sweep.yaml) and the catalog it names (domains/*.yaml), checks unknown
keys, types, ranges, folder-safe unique domain names, prompts that fit CLIP's context and k against the
generator's n_latent, and returns a `ResolvedSweep`. Every problem is reported as
`file:line: field: what is wrong (got value)`, all problems of a file at once.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic

from nada_sweep.adapt.settings import TrainSettings, k_problem, layer_selection_on, target_text_problem
from nada_sweep.errors import NO_VALUE, Loc, Problems, UserError, field_name, quoted
from nada_sweep.images import IMAGE_SUFFIXES, image_files, unreadable_image
from nada_sweep.models.checkpoints import BUILTIN_PREFIX
from nada_sweep.models.presets import GENERATOR_PRESETS
from nada_sweep.paths import Kind, PathProblem, kind_problem, output_folder_problem, shown, user_path
from nada_sweep.sweep import space
from nada_sweep.sweep.plan import ResolvedDomain, ResolvedSweep
from nada_sweep.sweep.schema import (
    ADAPTIVE_SEARCH,
    DEMO_TRAIN_DEFAULTS,
    OVERRIDE_FIELDS,
    Catalog,
    TRACKERS,
    VALUE_CONFIG,
    SweepFile,
    WandbSettings,
    constrained,
    unwrap,
    valid_keys,
)
from nada_sweep.sweep.yaml_doc import YamlDoc, load_yaml, problems_in


def load_sweep(path: str | Path, *, demo: bool = False) -> ResolvedSweep:
    """Load and check a sweep file and its catalog; raise UserError naming file, line, field and value.

    Reads the generator file to learn its n_latent (k is checked against it) but loads no CLIP weights.
    """
    try:
        sweep_file = user_path(path)
    except PathProblem as problem:
        raise UserError(f"sweep file: {problem}") from None
    doc = load_yaml(sweep_file, "sweep")
    problems = problems_in(doc)
    if not isinstance(doc.data, dict):
        what = "empty" if doc.data is None else f"a {type(doc.data).__name__}"
        raise UserError(f"{sweep_file}: the sweep file is {what}; expected a mapping with name, generator, "
                        "clip, catalog, ... (see sweep.yaml in the repository)")
    try:
        config = SweepFile.model_validate(doc.data)
    except pydantic.ValidationError as error:
        problems.add_validation_error(error, valid_keys=lambda loc: valid_keys(SweepFile, loc))
        problems.raise_if_any()
        raise  # unreachable: a ValidationError holds at least one problem

    search_raw: dict[str, tuple[tuple[Any, ...], Any]] = {name: ((), spec) for name, spec in config.search.items()}
    if demo:
        search_raw |= {name: (("demo",), spec) for name, spec in (config.demo.search or {}).items()}
    dims, dim_prefix = _check_search(search_raw, problems)
    dims = _check_search_alg(config, dims, dim_prefix, problems)
    config = _check_trackers(config, problems)

    sweep_train = config.train.model_dump(exclude_unset=True)
    demo_train = {**DEMO_TRAIN_DEFAULTS, **config.demo.train.model_dump(exclude_unset=True)} if demo else {}
    try:
        TrainSettings(**{**sweep_train, **demo_train})  # cross-field rules (n_samples <= n_eval) of the defaults
    except pydantic.ValidationError as error:
        for problem in error.errors():
            key = problem["loc"][0] if problem["loc"] else None
            loc = ("demo", "train", key) if key in demo_train else ("train", key) if key else ("train",)
            problems.add(loc, problem["msg"].removeprefix("Value error, "), problem.get("input", NO_VALUE))
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
    catalog_file = _checked_path(config.catalog, sweep_file, ("catalog",), problems, "file", "catalog file")
    problems.raise_if_any()
    assert catalog_file is not None  # its problem was raised

    lr_given = "lr" in sweep_train or (demo and "lr" in config.demo.train.model_dump(exclude_unset=True))
    catalog_doc, domains = _load_catalog(catalog_file, sweep_train, demo_train, dims, doc, lr_given)
    generator, loaded = _resolve_generator(config, sweep_file, problems.where((*model_loc, "generator")))
    n_latent = loaded.generator.n_latent
    _check_k(domains, dims, dim_prefix, n_latent, generator, problems, catalog_doc, _k_given_at(config, demo))

    adaptive = config.search_alg in ADAPTIVE_SEARCH
    trials = [] if adaptive else space.expand([d.name for d in domains], dims, config.num_samples,
                                               config.search_seed)
    if not trials and not adaptive:
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
        sweep_doc=doc,
    )
    _check_outputs(resolved, problems)
    _check_trials(resolved, problems, dim_prefix)
    return resolved


def _checked_path(value: str, anchor_file: Path, loc: Loc, problems: Problems, kind: Kind, what: str
                  ) -> Path | None:
    """`value` as an absolute path (relative to `anchor_file`) when it is an existing `kind`, else None and its
    problem (not found, the other kind, a symlink loop, ...) added at `loc`."""
    try:
        path = user_path(value, anchor_file)
    except PathProblem as problem:
        problems.add(loc, str(problem), value)
        return None
    problem = kind_problem(path, kind, what)
    if problem:
        problems.add(loc, problem, value)
        return None
    return path


def _check_outputs(sweep: ResolvedSweep, problems: Problems) -> None:
    """The folders `run` writes into can be created and written: results, Ray's storage, the MLflow store."""
    config = sweep.config
    outputs: list[tuple[Loc, str, Callable[[], Path | str]]] = [
        (("results_dir",), config.results_dir, lambda: sweep.results_root)]
    if config.storage is not None and "://" not in config.storage:
        outputs.append((("storage",), config.storage, lambda: sweep.storage))
    mlflow = config.trackers.mlflow
    if mlflow is not None and mlflow.tracking_uri is not None and ":" not in mlflow.tracking_uri:
        outputs.append((("trackers", "mlflow", "tracking_uri"), mlflow.tracking_uri,
                        lambda: user_path(mlflow.tracking_uri, sweep.sweep_file)))
    for loc, value, folder in outputs:
        try:
            problem = output_folder_problem(Path(folder()))
        except PathProblem as error:
            problem = str(error)
        if problem:
            problems.add(loc, problem, value)
    problems.raise_if_any()


def _check_trials(sweep: ResolvedSweep, problems: Problems, dim_prefix: dict[str, tuple[Any, ...]]) -> None:
    """Every trial's complete settings, for rules across fields (a searched n_samples above n_eval, ...).

    An adaptive search's trials are not known yet: every value it may suggest is checked instead.
    """
    for trial in sweep.probe_trials() if sweep.adaptive else sweep.trials:
        try:
            sweep.adapt_config(trial)
        except pydantic.ValidationError as error:
            message = "; ".join(p["msg"].removeprefix("Value error, ") for p in error.errors())
            field = next(iter(trial.params), None)
            loc = (*dim_prefix.get(field, ()), "search", field) if field else ("train",)
            what = f"with {trial.params}" if sweep.adaptive else trial.name
            problems.add(loc, f"trial {trial.domain}/{what}: {message}")
    problems.raise_if_any()


def _check_search(raw: dict[str, tuple[tuple[Any, ...], Any]], problems: Problems
                  ) -> tuple[list[space.SearchDim], dict[str, tuple[Any, ...]]]:
    """Search dimensions with every value checked against its setting's schema; also where each was given."""
    dims, prefixes = [], {}
    for name, (prefix, spec) in raw.items():
        try:
            (dim,) = space.parse_search({name: spec}, OVERRIDE_FIELDS)
        except space.SpecError as error:
            problems.add((*prefix, *error.loc), error.message, error.value if error.show_value else NO_VALUE)
            continue
        info = TrainSettings.model_fields[dim.field]
        kind_loc = (*prefix, "search", name) + ((dim.kind,) if dim.kind != "grid" else ())
        base_type = unwrap(info.annotation)
        if dim.kind in space.RANGE_KINDS and base_type not in (int, float):
            problems.add(kind_loc, f"{dim.kind} needs a numeric setting; {name} is not one: list its values")
            continue
        if dim.kind == "uniform" and base_type is int:
            problems.add(kind_loc, f"{name} takes whole numbers: use randint or a list")
            continue
        if dim.kind == "randint" and base_type is float:
            problems.add(kind_loc, f"{name} takes any number, and randint would draw whole ones only: use uniform, "
                         "loguniform, or a list of the values you want")
            continue
        adapter = pydantic.TypeAdapter(constrained(info), config=VALUE_CONFIG)
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


# What each optional extra needs importable (pip install nada-sweep[EXTRA]).
_EXTRA_MODULES = {
    "optuna": ("optuna",),
    "hyperopt": ("hyperopt",),
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),
}


def _missing(extra: str) -> list[str]:
    return [module for module in _EXTRA_MODULES[extra] if importlib.util.find_spec(module) is None]


def _not_installed(extra: str, missing: list[str]) -> str:
    return (f"needs {', '.join(missing)}, which is not installed here; pip install 'nada-sweep[{extra}]' "
            f"(or pip install {' '.join(missing)})")


def _check_search_alg(config: SweepFile, dims: list[space.SearchDim], dim_prefix: dict[str, tuple[Any, ...]],
                      problems: Problems) -> list[space.SearchDim]:
    """The search dimensions as the chosen algorithm sees them; entries it cannot search are problems."""
    alg = config.search_alg
    if config.search_startup is not None and alg not in ADAPTIVE_SEARCH:
        problems.add(("search_startup",), f"applies to {' and '.join(ADAPTIVE_SEARCH)} only (search_alg is {alg})")
    if alg in ADAPTIVE_SEARCH and (config.pack or 1) > 1:
        problems.add(("pack",), f"packs apply to search_alg grid and random; {alg} suggests one trial at a time "
                     "from the results so far, so its trials train alone: remove pack or set pack: 1", config.pack)
    if alg == "random":
        return [dim.as_choice() for dim in dims]  # each trial draws every entry, lists included
    if alg not in ADAPTIVE_SEARCH:
        return dims
    missing = _missing(alg)
    if missing:
        problems.add(("search_alg",), _not_installed(alg, missing), alg)
    if not dims and not problems.messages:
        problems.add(("search_alg",), f"{alg} needs at least one searched setting under `search:`", alg)
    for dim in dims:
        if dim.kind == "grid":
            values = ", ".join(json.dumps(value) for value in dim.values)
            problems.add((*dim_prefix[dim.field], "search", dim.field),
                         f"a list is a grid, which {alg} does not search (it picks values itself); write "
                         f"{{choice: [{values}]}} to let it choose among them, or use search_alg: grid")
    return dims


def _check_trackers(config: SweepFile, problems: Problems) -> SweepFile:
    """Every tracker asked for is installed (here, not in a worker); TensorBoard's default settled."""
    trackers = config.trackers
    asked = [name for name in TRACKERS if getattr(trackers, name) not in (None, False)]  # tensorboard None: default
    for name in asked:
        missing = _missing(name)
        if missing:
            problems.add(("trackers", name), _not_installed(name, missing))
    if trackers.tensorboard is None:
        trackers = trackers.model_copy(update={"tensorboard": not _missing("tensorboard")})
    if trackers.wandb is not None and not _missing("wandb"):
        _check_wandb_login(trackers.wandb, problems)
    return config.model_copy(update={"trackers": trackers})


def _check_wandb_login(settings: WandbSettings, problems: Problems) -> None:
    import wandb

    if settings.resolved_mode() == "online" and not wandb.api.api_key:
        problems.add(("trackers", "wandb"), "no W&B API key on this machine: run `wandb login`, set WANDB_API_KEY, "
                     "or set mode: offline (runs are written to disk and synced later with `wandb sync`)")


def _load_catalog(catalog_file: Path, sweep_train: dict[str, Any], demo_train: dict[str, Any],
                  dims: list[space.SearchDim], sweep_doc: YamlDoc, lr_given: bool
                  ) -> tuple[YamlDoc, list[ResolvedDomain]]:
    doc = load_yaml(catalog_file, "catalog")
    problems = problems_in(doc)
    if doc.data is None or (isinstance(doc.data, dict) and not doc.data.get("domains")):
        raise UserError(f"{catalog_file}: the catalog is empty; it needs a list `domains:` with at least one "
                        "{name, source, target} entry")
    if not isinstance(doc.data, dict):
        raise UserError(f"{catalog_file}: expected a mapping with `domains:` (a list), got a "
                        f"{type(doc.data).__name__}")
    try:
        catalog = Catalog.model_validate(doc.data)
    except pydantic.ValidationError as error:
        problems.add_validation_error(error, valid_keys=lambda loc: valid_keys(Catalog, loc))
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
                problems.add(where, label + message, problem.get("input", NO_VALUE))
            continue
        domains.append(ResolvedDomain(entry.name, source, entry.target, images, settings.model_dump(mode="json"),
                                      index, lr_given or "lr" in overrides))
    problems.raise_if_any()
    return doc, domains


def _check_prompt(text: str, loc: tuple[Any, ...], problems: Problems) -> None:
    from nada_sweep.models.clip_models import check_prompt

    label = field_name(loc)
    try:
        check_prompt(text, label)
    except UserError as error:
        problems.add(loc, str(error).removeprefix(f"{label}: "))


def _check_images(value: str | None, catalog_file: Path, loc: tuple[Any, ...], problems: Problems) -> str | None:
    """The style-image folder as an absolute path; every image in it is opened (a header check, not a decode)."""
    if value is None:
        return None
    folder = _checked_path(value, catalog_file, loc, problems, "folder", "folder of style images")
    if folder is None:
        return None
    files = image_files(folder)
    if not files:
        problems.add(loc, f"{shown(folder)} holds no images ({', '.join(IMAGE_SUFFIXES)})", value)
        return None
    for file in files:
        problem = unreadable_image(file)
        if problem:
            problems.add(loc, f"{shown(file)} is not a readable image: {problem}; remove or replace it", value)
    return str(folder)


def _resolve_generator(config: SweepFile, sweep_file: Path, where: str) -> tuple[str, Any]:
    """The generator's absolute path (or builtin name) and the loaded generator (its architecture)."""
    from nada_sweep.models.checkpoints import load_generator

    value = config.generator
    if value.startswith(BUILTIN_PREFIX):
        resolved = value
    elif value in GENERATOR_PRESETS:
        path = _user_path(config.weights_dir, sweep_file, f"{where}: weights_dir") / GENERATOR_PRESETS[value]
        if not os.path.lexists(path):  # (Path.exists raises for a name too long)
            raise UserError(
                f"{where}: generator: preset {value!r} means the file {shown(path)}, which does not exist. Put the "
                f"rosinality-format {GENERATOR_PRESETS[value]} there (weights_dir: {quoted(config.weights_dir)}; "
                "`nada-sweep models` says where to get it) or set "
                "generator to the path of your file; `--demo` runs the same sweep on built-in tiny models"
            )
        problem = kind_problem(path, "file", "generator file")
        if problem:
            raise UserError(f"{where}: generator: preset {value!r}: {problem}")
        resolved = str(path)
    else:
        path = _user_path(value, sweep_file, f"{where}: generator")
        problem = kind_problem(path, "file", "generator file")
        if problem:
            raise UserError(
                f"{where}: generator: {problem} (got {quoted(value)}); give a rosinality-format .pt file, "
                f"an NVIDIA StyleGAN2-ADA .pkl, a preset ({', '.join(GENERATOR_PRESETS)}) kept in weights_dir, "
                "or builtin:tiny"
            )
        resolved = str(path)
    try:
        loaded = load_generator(resolved)
    except UserError as error:
        raise UserError(f"{where}: generator: {str(error).removeprefix('generator: ')}") from None
    return resolved, loaded


def _user_path(value: str, anchor_file: Path, where: str) -> Path:
    try:
        return user_path(value, anchor_file)
    except PathProblem as problem:
        raise UserError(f"{where}: {problem} (got {quoted(value)})") from None


def _resolve_clip(name: str, sweep_file: Path, loc: tuple[Any, ...], problems: Problems) -> str:
    """A CLIP name as trials will use it: known names kept, files made absolute. No weights are loaded here."""
    import clip

    from nada_sweep.models.clip_models import BUILTIN_TINY

    if name == BUILTIN_TINY or name in clip.available_models():
        return name
    try:
        path = user_path(name, sweep_file)
    except PathProblem as problem:
        problems.add(loc, str(problem), name)
        return name
    if os.path.lexists(path):  # a link counts: kind_problem names a broken or looping one
        problem = kind_problem(path, "file", "CLIP model file")
        if problem:
            problems.add(loc, problem, name)
        return str(path)
    close = [m for m in clip.available_models() if m.lower() == name.lower()]
    hint = f"did you mean {close[0]!r}? " if close else ""
    problems.add(loc, f"not a CLIP model name or an existing file; {hint}use one of "
                 f"{', '.join(clip.available_models())}, {BUILTIN_TINY}, or a path to a .pt file", name)
    return name


def _k_given_at(config: SweepFile, demo: bool) -> Loc | None:
    """Where the sweep file sets every domain's k: demo.train (with --demo, over the domains' own), train, or None."""
    if demo and "k" in config.demo.train.model_fields_set:
        return ("demo", "train", "k")
    return ("train", "k") if "k" in config.train.model_fields_set else None


def _check_k(domains: list[ResolvedDomain], dims: list[space.SearchDim], dim_prefix: dict[str, tuple[Any, ...]],
             n_latent: int, generator: str, problems: Problems, catalog_doc: YamlDoc, sweep_k: Loc | None) -> None:
    """k within 0..n_latent everywhere it is set (reported where it is set), and no layer selection without a
    target text."""
    catalog_problems = problems_in(catalog_doc)
    entries = catalog_doc.data["domains"]
    k_dim = next((dim for dim in dims if dim.field == "k"), None)
    k_values: list[int] = []
    sweep_k_reported = False
    if k_dim is not None:
        loc = (*dim_prefix["k"], "search", "k") + ((k_dim.kind,) if k_dim.kind != "grid" else ())
        k_values = list(k_dim.values) if k_dim.kind != "randint" else [k_dim.values[1]]
        for index, value in enumerate(k_dim.values):
            problem = k_problem(value, n_latent, generator)
            if problem:
                problems.add((*loc, index), problem, value)
    for domain in domains:
        loc = ("domains", domain.index)
        problem = k_problem(domain.settings["k"], n_latent, generator) if k_dim is None else None
        if problem:
            if sweep_k is None or ("k" in entries[domain.index] and sweep_k[0] != "demo"):
                catalog_problems.add((*loc, "k"), problem, domain.settings["k"])
            elif not sweep_k_reported:
                problems.add(sweep_k, problem, domain.settings["k"])
                sweep_k_reported = True
        selects = any(layer_selection_on(k, domain.settings["auto_layer_iters"])
                      for k in (k_values or [domain.settings["k"]]))
        problem = target_text_problem(selects, domain.settings["lambda_global"], domain.settings["lambda_manifold"],
                                      domain.target)
        if problem:
            catalog_problems.add(loc, problem)
    problems.messages.extend(catalog_problems.messages)
    problems.raise_if_any()
