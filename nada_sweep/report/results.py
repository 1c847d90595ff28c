"""Reading a sweep's results folder: only what trials wrote to disk, finished or not.

Layout read here: `<results>/sweep.resolved.yaml` (optional) and `<results>/trials/<domain>/<trial>/` run
folders (config.json, status.json, metrics.jsonl, samples/, generator.pt). Any of a run folder's files may
be missing (a trial not started yet, or one that failed early); nothing here raises for that.

Folder and domain names are untrusted text: every path taken from them is resolved and must stay inside the
results folder (a symlink pointing elsewhere is skipped), and names used for new files go through `safe_name`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nada_sweep import run_files
from nada_sweep.errors import UserError
from nada_sweep.metric_rules import (
    DEFAULT_COLLAPSE_THRESHOLD,
    DEFAULT_SELECT_METRIC,
    GPU_PEAK_MEM,
    SELECTABLE,
    finite,
)
from nada_sweep.run_files import RANDOM_WEIGHT_LABEL, RunFolder, Status, SweepFolder

TRIALS = SweepFolder.TRIALS
SWEEP_CONFIG = SweepFolder.RESOLVED
_STEP_FILE = re.compile(r"step_(\d+)\.png")


@dataclass(frozen=True)
class Selection:
    """How each domain's best trial and step are chosen."""

    metric: str = DEFAULT_SELECT_METRIC
    collapse_threshold: float = DEFAULT_COLLAPSE_THRESHOLD


def checked_selection(metric: object, threshold: object, from_file: Collection[str] = ()) -> Selection:
    """A Selection from user values; errors name the field (and sweep.resolved.yaml when it came from there)."""

    def where(name: str) -> str:
        return f"{SWEEP_CONFIG}: {name}" if name in from_file else name

    if metric not in SELECTABLE:
        raise UserError(f"{where('select_metric')}: {metric!r} is not a metric; choose one of {', '.join(SELECTABLE)}")
    value = finite(threshold)
    if value is None or value < 0:
        raise UserError(
            f"{where('collapse_threshold')}: {threshold!r} must be a number >= 0 "
            "(a diversity_ratio below it marks a trial collapsed; 0 turns the check off)"
        )
    return Selection(str(metric), value)


@dataclass
class Trial:
    """One trial's run folder as found on disk."""

    domain: str  # the domain's name (labels.domain, else the folder name): display text, not a path
    trial_id: str
    folder: Path  # resolved, inside the results folder
    rel: tuple[str, ...]  # path parts of `folder` relative to the results folder, for links
    status: Status
    error: str | None
    config: dict[str, Any]
    params: dict[str, Any]
    history: list[dict[str, Any]]
    random_weights: bool
    demo: bool
    label: str | None
    status_step: int | None = None  # the step status.json reports (training may be past the last eval)
    problems: list[str] = field(default_factory=list)  # unreadable files, shown next to the trial
    mapper: dict[str, Any] = field(default_factory=dict)  # mapper_metrics.json of the latent-mapper stage
    trainable: int | None = None  # how many numbers the trial trained (config.json), when recorded

    @property
    def source(self) -> str:
        return str(self.config.get("source") or "")

    @property
    def target(self) -> str:
        return str(self.config.get("target") or self.config.get("target_images") or "")

    @property
    def generator(self) -> str:
        return str(self.config.get("generator") or "")

    def setting(self, name: str) -> Any:
        """A training setting as the trial ran it (searched value, else the resolved config's)."""
        return self.params.get(name, self.config.get(name))

    @property
    def mode(self) -> str:
        """The parametrization the trial trained (runs from before light modes trained the full generator)."""
        return str(self.setting("params") or "full")

    @property
    def weights_file(self) -> Path | None:
        """What the trial keeps of its result: domain.pt for a light mode, else generator.pt (None: not yet)."""
        return self.file(run_files.DOMAIN) or self.file(run_files.GENERATOR)

    @property
    def file_bytes(self) -> int | None:
        kept = self.weights_file
        return kept.stat().st_size if kept is not None else None

    @property
    def steps_done(self) -> int:
        evaluated = self.history[-1]["step"] if self.history else 0
        return max(evaluated, self.status_step or 0)

    @property
    def elapsed_s(self) -> float | None:
        return finite(self.history[-1].get("elapsed_s")) if self.history else None

    @property
    def gpu_peak_mem_gb(self) -> float | None:
        """The most GPU memory the trial's tensors took (GiB) in any eval line; None for a trial on the CPU."""
        readings = [value for entry in self.history if (value := finite(entry.get(GPU_PEAK_MEM))) is not None]
        return max(readings, default=None)

    @property
    def generator_step(self) -> int | None:
        """The eval step whose weights generator.pt holds (the trainer's own best step)."""
        if not self.history:
            return None
        return self.history[-1].get("best_step")

    def file(self, *parts: str) -> Path | None:
        """An existing file of this trial whose real location is inside the trial folder, else None."""
        return contained(self.folder.joinpath(*parts), self.folder)

    def sample_steps(self) -> list[int]:
        """Eval steps with a sample grid on disk, in order."""
        samples = self.file(run_files.SAMPLES)
        if samples is None:
            return []
        steps = []
        for path in samples.iterdir():
            match = _STEP_FILE.fullmatch(path.name)
            if match and self.file(run_files.SAMPLES, path.name):
                steps.append(int(match.group(1)))
        return sorted(steps)

    @staticmethod
    def sample_name(step: int | None) -> str:
        """File name of the sample grid of `step`, or of the source generator when step is None."""
        return run_files.SOURCE_SAMPLES if step is None else run_files.sample_name(step)

    def sample(self, step: int | None) -> Path | None:
        return self.file(run_files.SAMPLES, self.sample_name(step))

    def mapper_sample(self) -> Path | None:
        """The sample grid of the best step's generator seen through the latent mapper, if one was trained."""
        return self.file(run_files.SAMPLES, run_files.MAPPER_SAMPLES)


@dataclass
class Sweep:
    root: Path  # resolved
    name: str
    selection: Selection
    trials: list[Trial]
    demo: bool
    demo_label: str | None
    warnings: list[str]
    planned: dict[str, int] = field(default_factory=dict)  # domain -> trials it will run (sweep.resolved.yaml)
    export_full: bool = False  # best/ gets light-mode winners' folded generator.pt beside their domain.pt

    @property
    def total(self) -> int:
        """Trials of the sweep in all: those planned, or those on disk when the plan is unknown or outgrown."""
        return max(sum(self.planned.values()), len(self.trials))


def contained(path: Path, root: Path) -> Path | None:
    """`path` resolved when it exists and really lies inside `root` (symlinks followed), else None."""
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return resolved if resolved.is_relative_to(root.resolve()) else None


def safe_name(text: str, taken: set[str]) -> str:
    """A file name made from untrusted `text`: no separators, no leading dot, unique within `taken`."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-")[:80] or "domain"
    name, n = base, 2
    while name.lower() in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name.lower())
    return name


def read_sweep(
    results_dir: Path | str,
    *,
    select_metric: str | None = None,
    collapse_threshold: float | None = None,
    export_full: bool | None = None,
) -> Sweep:
    """Everything the report needs from a results folder. Explicit arguments override sweep.resolved.yaml."""
    given = Path(results_dir)
    if not given.is_dir():
        raise UserError(f"results folder: {given} does not exist or is not a folder")
    root = given.resolve()
    if not (root / TRIALS).is_dir():
        raise UserError(f"results folder: {given} holds no {TRIALS}/ folder; is it a sweep's results folder?")
    warnings: list[str] = []
    resolved = _read_sweep_config(root, warnings)
    trials = _read_trials(root, warnings)
    given_here = {"select_metric": select_metric, "collapse_threshold": collapse_threshold}
    from_file = {name for name, value in given_here.items() if value is None and name in resolved}
    metric = select_metric or resolved.get("select_metric") or _trials_metric(trials) or DEFAULT_SELECT_METRIC
    threshold = collapse_threshold if collapse_threshold is not None else resolved.get("collapse_threshold")
    selection = checked_selection(metric, DEFAULT_COLLAPSE_THRESHOLD if threshold is None else threshold, from_file)
    demo = bool(resolved.get("demo")) or any(t.demo or t.random_weights for t in trials)
    return Sweep(
        root=root,
        name=str(resolved.get("name") or root.name),
        selection=selection,
        trials=trials,
        demo=demo,
        demo_label=next((t.label for t in trials if t.label), RANDOM_WEIGHT_LABEL) if demo else None,
        warnings=warnings,
        planned=_planned(resolved),
        export_full=bool(resolved.get("export_full")) if export_full is None else export_full,
    )


def _read_sweep_config(root: Path, warnings: list[str]) -> dict[str, Any]:
    path = root / SWEEP_CONFIG
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        warnings.append(f"{path}: unreadable ({error}); using the default selection")
        return {}
    return data if isinstance(data, dict) else {}


def _planned(resolved: dict[str, Any]) -> dict[str, int]:
    """Trials per domain the resolved sweep will run: its trial list, or num_samples per domain when a searcher
    picks the trials as it goes."""
    planned: dict[str, int] = {}
    trials, domains = resolved.get("trials"), resolved.get("domains")
    if isinstance(trials, list) and trials:
        for entry in trials:
            if isinstance(entry, dict) and isinstance(entry.get("domain"), str):
                planned[entry["domain"]] = planned.get(entry["domain"], 0) + 1
    elif isinstance(domains, list) and isinstance(resolved.get("num_samples"), int):
        for entry in domains:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                planned[entry["name"]] = resolved["num_samples"]
    return planned


def _trials_metric(trials: list[Trial]) -> str | None:
    """The select_metric the trials were trained with, when they all agree (no sweep.resolved.yaml)."""
    metrics = {t.config.get("select_metric") for t in trials if t.config.get("select_metric")}
    return metrics.pop() if len(metrics) == 1 else None


def _listing(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())


def _read_trials(root: Path, warnings: list[str]) -> list[Trial]:
    trials = []
    for domain_dir in _listing(root / TRIALS):
        for trial_dir in _listing(domain_dir):
            folder = contained(trial_dir, root)
            if folder is None:
                warnings.append(f"{trial_dir}: points outside the results folder; skipped")
                continue
            trials.append(_read_trial(folder, domain_dir.name, trial_dir.name))
    return trials


def _read_dict(folder: Path, name: str, problems: list[str]) -> dict[str, Any]:
    path = contained(folder / name, folder)
    if path is None:
        return {}
    try:
        data = run_files.read_json(path)
    except (OSError, ValueError) as error:
        problems.append(f"{name} unreadable: {error}")
        return {}
    return data if isinstance(data, dict) else {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _read_history(folder: Path, problems: list[str]) -> list[dict[str, Any]]:
    if contained(folder / run_files.METRICS, folder) is None:
        return []
    try:
        lines = RunFolder(folder).history()
    except (OSError, ValueError) as error:
        problems.append(f"{run_files.METRICS} unreadable: {error}")
        return []
    return [entry for entry in lines if isinstance(entry, dict) and isinstance(entry.get("step"), int)]


def _read_trial(folder: Path, domain_dir: str, trial_dir: str) -> Trial:
    problems: list[str] = []
    record = _read_dict(folder, run_files.CONFIG, problems)
    status = _read_dict(folder, run_files.STATUS, problems)
    labels = _dict(record.get("labels"))
    return Trial(
        domain=str(labels.get("domain") or domain_dir),
        trial_id=str(labels.get("trial") or trial_dir),
        folder=folder,
        rel=(TRIALS, domain_dir, trial_dir),
        status=Status.of(status),
        error=str(status["error"]) if status.get("error") else None,
        config=_dict(record.get("config")),
        params=_dict(labels.get("params")),
        history=_read_history(folder, problems),
        status_step=status.get("step") if isinstance(status.get("step"), int) else None,
        random_weights=bool(record.get("random_weights")),
        demo=bool(labels.get("demo")),
        label=str(record["label"]) if record.get("label") else None,
        problems=problems,
        mapper=_read_dict(folder, run_files.MAPPER_METRICS, problems),
        trainable=record["trainable"] if isinstance(record.get("trainable"), int) else None,
    )


def dumps(data: Any) -> str:
    """Strict JSON (non-finite floats become null) for files other tools read."""
    return json.dumps(_strict(data), indent=2) + "\n"


def _strict(data: Any) -> Any:
    if isinstance(data, float):
        return finite(data)
    if isinstance(data, dict):
        return {str(k): _strict(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_strict(v) for v in data]
    return data
