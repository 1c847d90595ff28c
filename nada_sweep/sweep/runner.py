"""`nada-sweep validate` and `nada-sweep run`: the trial table, the Ray Tune fan-out, resume and failures.

Each trial runs `run_adaptation` in its own folder, results/<sweep>/trials/<domain>/<trial>/, named from the
searched values so that a rerun finds it again. Resuming therefore needs nothing from Ray: running the same
command again skips finished trials (their recorded metrics are replayed to Tune), continues interrupted ones
from their state.pt, and retries failed ones. Tune's own experiment state (storage) is only bookkeeping.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from nada_sweep import run_files
from nada_sweep.config import ResolvedSweep, load_sweep
from nada_sweep.errors import UserError
from nada_sweep.report.metrics import LOWER_IS_BETTER
from nada_sweep.run_files import RunFolder

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from nada_sweep.adapt.settings import AdaptConfig
    from nada_sweep.sweep.progress import SweepProgress

EXIT_OK = 0
EXIT_TRIALS_FAILED = 1
EXIT_INTERRUPTED = 130

RESOLVED_FILE = "sweep.resolved.yaml"
LOCK_FILE = ".lock"
STOPPED = "stopped"  # status.json of a trial stopped early by the per-domain scheduler
FAILED = "failed"
INTERRUPTED = "interrupted"
DIVERGED = "diverged"
DEMO_NOTE = "DEMO: built-in tiny random-weight models. The pipeline ran end to end; the images mean nothing."
DEMO_PLAN_NOTE = (
    "DEMO: built-in tiny random-weight models and a small step budget: this shows the pipeline works, its images "
    "and scores mean nothing."
)


# ----------------------------------------------------------------------------------------------------------
# Commands (called by nada_sweep.cli)


def validate_command(path: str | Path, *, demo: bool = False, console: Console | None = None) -> int:
    """Load and check the sweep, print its trial table; starts nothing. Bad input raises UserError."""
    console = console or Console()
    sweep = load_sweep(path, demo=demo)
    print_plan(sweep, console)
    _say(console, Text.assemble(("valid", "green"), f": {sweep.sweep_file} ({len(sweep.trials)} trials)"))
    return EXIT_OK


def run_command(
    path: str | Path,
    *,
    demo: bool = False,
    dry_run: bool = False,
    fresh: bool = False,
    address: str | None = None,
    verbose: bool = False,
    offline: bool = False,
    console: Console | None = None,
) -> int:
    """Run (or continue) the sweep; returns the exit code: 0 all trials succeeded, 1 some failed, 130 stopped.

    dry_run: print the trial table only (like validate). fresh: move an existing results folder aside first.
    address: None starts Ray locally; "auto" or "ray://host:port" joins a running cluster.
    offline: never download CLIP weights; otherwise missing ones are fetched here, before any trial starts.
    """
    from nada_sweep.models.clip_models import ensure_downloaded

    console = console or Console()
    sweep = load_sweep(path, demo=demo)
    if not dry_run:
        ensure_downloaded(_clip_names(sweep), offline=offline)
    print_plan(sweep, console)
    if dry_run:
        console.print("dry run: nothing started")
        return EXIT_OK
    return run_sweep(sweep, fresh=fresh, address=address, verbose=verbose, console=console)


# ----------------------------------------------------------------------------------------------------------
# The plan


def print_plan(sweep: ResolvedSweep, console: Console) -> None:
    """The expanded trials: per domain its prompt and trials, then the totals and resources."""
    config = sweep.config
    title = f"sweep {sweep.name}" + ("  [DEMO: tiny random-weight models]" if sweep.demo else "")
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("domain")
    table.add_column("source -> target")
    table.add_column("steps", justify="right")
    table.add_column("trials")
    existing = _status_counts(sweep)
    if existing:
        table.add_column("done", justify="right")
    by_domain: dict[str, list[str]] = {}
    for trial in sweep.trials:
        by_domain.setdefault(trial.domain, []).append(trial.name)
    for domain in sweep.domains:
        target = domain.target if domain.target is not None else f"images in {domain.target_images}"
        steps = sorted({sweep.adapt_config(t).steps for t in sweep.trials if t.domain == domain.name})
        row = [
            Text(domain.name),
            Text(f"{domain.source} -> {target}"),
            "/".join(map(str, steps)),
            Text(", ".join(by_domain[domain.name])),
        ]
        if existing:
            row.append(f"{existing.get(domain.name, 0)}/{len(by_domain[domain.name])}")
        table.add_row(*row)
    console.print(table)

    searched = "; ".join(f"{dim.field}: {dim.describe()}" for dim in sweep.search) or "nothing searched"
    repeats = f" x {config.num_samples} repeats" if config.num_samples > 1 else ""
    console.print(
        Text(f"{len(sweep.trials)} trials = {len(sweep.domains)} domains x {len(sweep.trials) // len(sweep.domains)}"
             f" ({searched}){repeats}")
    )
    gpus = config.resources.gpus
    _say(console, Text(
        f"each trial: {config.resources.cpus:g} CPU, {gpus:g} GPU" + ("" if gpus else " (runs on CPU)")
        + (f"; at most {config.max_concurrent} at once" if config.max_concurrent else "")
        + (f"; retries {config.retries}" if config.retries else "")
        + ("; early stopping per domain (ASHA on "
           f"{config.early_stopping.metric or config.select_metric})" if config.early_stopping else "")
    ))
    clip = ", ".join(f"{spec.name} x{spec.weight:g}" for spec in sweep.clip)
    _say(console, Text(f"generator {sweep.generator} ({sweep.generator_size} px, n_latent {sweep.n_latent}); "
                       f"CLIP {clip}; metrics by {sweep.eval_clip or sweep.clip[0].name}"))
    _say(console, Text(f"results: {sweep.results_root}"))
    for warning in _missing_clip_files(sweep):
        _say(console, Text(warning, style="yellow"))
    if sweep.demo:
        _say(console, Text(DEMO_PLAN_NOTE, style="yellow"))


def _missing_clip_files(sweep: ResolvedSweep) -> list[str]:
    """Named CLIP models whose weights this machine lacks (trials never download; workers elsewhere may have them)."""
    from nada_sweep.models.clip_models import CLIP_URLS, clip_cache_path

    return [
        f"note: {name} is not downloaded on this machine ({clip_cache_path(name)} is missing); `run` downloads "
        "it before starting trials (unless --offline)"
        for name in _clip_names(sweep)
        if name in CLIP_URLS and not clip_cache_path(name).is_file()
    ]


def _clip_names(sweep: ResolvedSweep) -> list[str]:
    """Every CLIP model the trials load: the guidance ensemble and the evaluation model."""
    return list(dict.fromkeys([spec.name for spec in sweep.clip] + [sweep.eval_clip or sweep.clip[0].name]))


def _say(console: Console, text: Text) -> None:
    # Long lines (paths, errors) stay whole in logs instead of wrapping at the console width.
    console.print(text, soft_wrap=True)


def _status_counts(sweep: ResolvedSweep) -> dict[str, int]:
    """Finished trials per domain, when a results folder already exists (a rerun continues it)."""
    counts: dict[str, int] = {}
    if not sweep.results_root.is_dir():
        return counts
    for trial in sweep.trials:
        status = _read_status(sweep.trial_dir(trial))
        if status in (run_files.FINISHED, STOPPED):
            counts[trial.domain] = counts.get(trial.domain, 0) + 1
    return counts


def _read_status(folder: Path) -> str | None:
    try:
        status = RunFolder(folder).status()
    except (OSError, ValueError):
        return None
    return status.get("status") if isinstance(status, dict) else None


# ----------------------------------------------------------------------------------------------------------
# The trial (runs in a Ray worker)


def trial_payload(sweep: ResolvedSweep, index: int) -> dict[str, Any]:
    """Everything one trial needs, as plain data (it travels in the Tune config and its experiment state)."""
    plan = sweep.trials[index]
    config = sweep.adapt_config(plan)
    return {
        "index": index,
        "domain": plan.domain,
        "name": plan.name,
        "out_dir": str(sweep.trial_dir(plan)),
        "steps": config.steps,
        "cpus": sweep.config.resources.cpus,
        "config": config.model_dump(mode="json"),
        "labels": {"sweep": sweep.name, "domain": plan.domain, "trial": plan.name, "params": plan.params,
                   "demo": sweep.demo},
    }


def _reportable(entry: dict[str, Any]) -> dict[str, Any]:
    # Tune and the schedulers want plain numbers; metrics that do not apply (None) are left out.
    return {key: value for key, value in entry.items() if isinstance(value, (int, float)) and value is not None}


def run_trial(config: dict[str, Any]) -> None:
    """The Tune trainable: one adaptation, reporting every evaluation to Tune."""
    import ray
    import torch
    from ray import tune

    from nada_sweep.adapt.settings import AdaptConfig
    from nada_sweep.adapt.trainer import TrainingDiverged, run_adaptation

    spec = config["trial"]
    folder = RunFolder(spec["out_dir"])
    if not ray.get_gpu_ids():
        # A trial without a GPU must not touch one, whatever Ray's defaults for CUDA_VISIBLE_DEVICES.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    torch.set_num_threads(max(1, int(spec["cpus"])))

    status = folder.status() or {}
    if status.get("status") in (run_files.FINISHED, STOPPED):
        for entry in folder.history():  # replayed so Tune, ASHA and the display see the finished curve
            tune.report(_reportable(entry))
        return
    if status.get("status") == DIVERGED:
        raise TrainingDiverged(status.get("error") or "the loss became NaN or infinite")

    adapt = AdaptConfig.model_validate(spec["config"])
    try:
        run_adaptation(adapt, folder.root, on_eval=lambda entry: tune.report(_reportable(entry)),
                       labels=spec["labels"], frozen_side=_frozen_side(spec, adapt))
    except Exception as error:
        if (folder.status() or {}).get("status") not in (FAILED, DIVERGED):  # the trainer records its own
            _set_status(folder, FAILED, f"{type(error).__name__}: {error}")
        raise


def longest_first(sweep: ResolvedSweep, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trials' payloads (in sweep.trials order) reordered by estimated cost, largest first, ties kept in order.

    Tune starts trials in the order it is given them. Starting the longest first (longest-processing-time-first
    scheduling) lets the sweep end on short trials instead of leaving workers idle while one long trial finishes.
    """
    costs = [estimated_cost(sweep.adapt_config(plan)) for plan in sweep.trials]
    return [payloads[i] for i in sorted(range(len(payloads)), key=lambda i: -costs[i])]


def estimated_cost(config: AdaptConfig) -> float:
    """A trial's work in latents passed through generator and CLIP; a rough measure, used only to order trials."""
    per_step = config.batch
    if config.selects_layers:
        per_step += config.auto_layer_batch * config.auto_layer_iters / config.auto_layer_every
    mapper = config.mapper
    return config.steps * per_step + (mapper.steps * mapper.batch if mapper else 0)


def _plan_frozen_bank(sweep: ResolvedSweep, payloads: list[dict[str, Any]]) -> None:
    """Where each trial's shared frozen bank lives and how many steps it must cover (nada_sweep.adapt.bank)."""
    from nada_sweep.adapt.bank import bank_dir_for, bank_entries

    sizes = bank_entries([sweep.adapt_config(plan) for plan in sweep.trials])
    for payload, size in zip(payloads, sizes):
        payload["bank"] = {"dir": str(bank_dir_for(sweep.results_root)), "entries": size}


def _frozen_side(spec: dict[str, Any], adapt: Any) -> Any:
    """The shared frozen bank for this trial; none (live frozen side every step) for faithful runs."""
    from nada_sweep.adapt.bank import bank_frozen_side

    bank = spec.get("bank")
    return bank_frozen_side(bank["dir"], bank["entries"]) if bank and not adapt.faithful else None


def _set_status(folder: RunFolder, status: str, error: str | None, **extra: Any) -> None:
    """Change a run's status, keeping what the trainer recorded (step, best_step)."""
    folder.write_status(**{**(folder.status() or {}), "status": status, "error": error, **extra})


# ----------------------------------------------------------------------------------------------------------
# The driver


@dataclass
class TrialOutcome:
    domain: str
    name: str
    folder: Path
    status: str  # ok | stopped | failed | diverged | interrupted | running (driver killed) | pending
    error: str | None


def run_sweep(
    sweep: ResolvedSweep,
    *,
    fresh: bool = False,
    address: str | None = None,
    verbose: bool = False,
    console: Console | None = None,
) -> int:
    """Run every trial of `sweep` on Ray Tune, then print the summary and build the report."""
    console = console or Console()
    root = sweep.results_root
    if fresh:
        move_aside(root, console)
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root):
        payloads = [trial_payload(sweep, i) for i in range(len(sweep.trials))]
        _plan_frozen_bank(sweep, payloads)
        _check_existing_trials(sweep, payloads)
        payloads = longest_first(sweep, payloads)
        started = time.monotonic()
        with _ray_for_run(address, verbose) as release_ray:
            try:
                _fit(sweep, payloads, verbose=verbose, console=console)
            finally:
                release_ray()  # the report needs no Ray
            outcomes = collect_outcomes(sweep)
            return _finish(sweep, outcomes, time.monotonic() - started, console)


@contextlib.contextmanager
def _ray_for_run(address: str | None, verbose: bool) -> Iterator[Callable[[], None]]:
    """Ray for this run: the one a caller (a notebook, the tests) is connected to, else one started here.

    Yields `release`: once the trials are over it starts stopping a Ray started here in the background (about
    1.5 s, spent while the report is built); leaving the block waits for that stop.
    """
    import ray

    owns_ray = not ray.is_initialized()
    if owns_ray:
        _start_ray(address, verbose)
    stopping: threading.Thread | None = None

    def release() -> None:
        nonlocal stopping
        if owns_ray and stopping is None:
            stopping = threading.Thread(target=ray.shutdown, name="ray-shutdown")
            stopping.start()

    try:
        yield release
    finally:
        release()
        if stopping is not None:
            stopping.join()


def _fit(sweep: ResolvedSweep, payloads: list[dict[str, Any]], *, verbose: bool, console: Console) -> None:
    if not verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # with verbose=0 the legacy output engine prints nothing
        # Tune logs advice (e.g. resume with Tuner.restore) that does not apply to this command.
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    from ray import tune

    from nada_sweep.sweep.progress import SweepProgress

    _check_cluster(sweep)
    # Only now: a run refused for its resources leaves the resolved config of the last real run in place.
    write_resolved(sweep)
    title = f"{sweep.name}" + (" [DEMO]" if sweep.demo else "")
    progress = SweepProgress(title, len(payloads), sweep.config.select_metric, console)
    stopped: dict[str, int | None] = {}
    resources = sweep.config.resources
    tuner = tune.Tuner(
        tune.with_resources(run_trial, {"cpu": resources.cpus, "gpu": resources.gpus}),
        param_space={"trial": tune.grid_search(payloads)},
        tune_config=tune.TuneConfig(
            scheduler=_scheduler(sweep, payloads, progress, stopped),
            num_samples=1,
            max_concurrent_trials=sweep.config.max_concurrent,
            reuse_actors=True,  # a worker keeps its loaded generator/CLIP models for the next trial
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=time.strftime("run-%Y%m%d-%H%M%S"),
            storage_path=sweep.storage,
            failure_config=tune.FailureConfig(max_failures=sweep.config.retries),
            callbacks=[progress],
            verbose=1 if verbose else 0,
        ),
    )
    try:
        tuner.fit()
    finally:
        progress.close()
        _settle_statuses(progress.started - progress.errored.keys(), stopped, _early_stopping_metric(sweep))
        _settle_lost_trials(progress.errored)


def _settle_statuses(stopped_by_tune: set[str], stopped_early: dict[str, int | None], metric: str) -> None:
    """Give each trial that Tune stopped (rather than one that failed) a status saying so, once all are gone.

    `stopped_by_tune`: folders of the trials that ran in this run and did not fail for good. Tune stops a trial
    by raising SystemExit inside its report call, or by ending its process; the trial may record that as a
    failure or not at all. The driver knows better: stopped early (ASHA), or interrupted (resumable).
    """
    for out_dir in stopped_by_tune:
        folder = RunFolder(out_dir)
        status = (folder.status() or {}).get("status")
        if out_dir in stopped_early and status != run_files.FINISHED:
            _set_status(folder, STOPPED, None, step=stopped_early[out_dir],
                        reason=f"early stopping: {metric} behind the other trials of its domain")
        elif status in (FAILED, "running"):
            _set_status(folder, INTERRUPTED, None)


def _settle_lost_trials(errored: dict[str, str | None]) -> None:
    """Record as failed the trials whose process died without a word (SIGKILL, out of memory, a lost node).

    Such a trial's folder still says "running"; left so, the run would look interrupted rather than failed.
    """
    for out_dir, tune_error in errored.items():
        folder = RunFolder(out_dir)
        try:
            previous = folder.status() or {}
        except (OSError, ValueError):
            previous = {}
        if previous.get("status") in (None, "running"):
            detail = f" (Ray: {tune_error})" if tune_error else ""
            error = ("the trial's process ended without recording an error: killed, out of memory, or its Ray node "
                     f"was lost{detail}; the next run continues it from its last checkpoint")
            folder.write_status(**{**previous, "status": FAILED, "error": error})


def write_resolved(sweep: ResolvedSweep) -> None:
    """sweep.resolved.yaml: the fully resolved config of the run that starts now (atomic: readers see old or new)."""
    run_files.atomic_write(sweep.results_root / RESOLVED_FILE, lambda tmp: tmp.write_text(sweep.to_yaml()))


def _early_stopping_metric(sweep: ResolvedSweep) -> str:
    early = sweep.config.early_stopping
    return (early.metric if early else None) or sweep.config.select_metric


def _trial_name(trial: Trial) -> str:
    spec = trial.config["trial"]
    return f"{spec['index']:04d}-{spec['domain']}-{spec['name']}"[:120]


def _start_ray(address: str | None, verbose: bool) -> None:
    import ray

    level = logging.INFO if verbose else logging.ERROR
    try:
        if address is None:
            # "local": a private instance even when RAY_ADDRESS or a `ray start` cluster exists on this machine.
            ray.init(address="local", include_dashboard=False, log_to_driver=verbose, logging_level=level)
        else:
            ray.init(address=address, log_to_driver=verbose, logging_level=level)
    except ConnectionError as error:
        raise UserError(f"--address {address}: cannot connect to a Ray cluster ({error}); start one with "
                        "`ray start --head` or omit --address to run locally") from None


def _check_cluster(sweep: ResolvedSweep) -> None:
    """Refuse requests the cluster can never satisfy (Tune would wait for them forever)."""
    import ray

    available = ray.cluster_resources()
    resources = sweep.config.resources
    where = f"{sweep.sweep_file}: resources"
    if resources.gpus > 0 and available.get("GPU", 0) < resources.gpus:
        raise UserError(f"{where}.gpus: each trial asks for {resources.gpus:g} GPU but the Ray cluster has "
                        f"{available.get('GPU', 0):g}; set gpus: 0 to train on CPUs (or try --demo)")
    if available.get("CPU", 0) < resources.cpus:
        raise UserError(f"{where}.cpus: each trial asks for {resources.cpus:g} CPUs but the Ray cluster has "
                        f"{available.get('CPU', 0):g}; lower resources.cpus")


def _scheduler(sweep: ResolvedSweep, payloads: list[dict[str, Any]], progress: SweepProgress,
               stopped: dict[str, int | None]) -> Any:
    """FIFO, or early stopping per domain; `stopped` collects the folders of trials stopped early."""
    from ray.tune.schedulers import FIFOScheduler

    early = sweep.config.early_stopping
    if early is None:
        return FIFOScheduler()
    from nada_sweep.sweep.scheduler import PerDomainASHA

    max_steps: dict[str, int] = {}
    for payload in payloads:
        max_steps[payload["domain"]] = max(max_steps.get(payload["domain"], 0), payload["steps"])
    metric = _early_stopping_metric(sweep)

    def on_stop(trial: Trial, result: dict[str, Any]) -> None:
        progress.mark_stopping(trial)
        stopped[trial.config["trial"]["out_dir"]] = result.get("step")

    mode = "min" if metric in LOWER_IS_BETTER else "max"
    return PerDomainASHA(metric, mode, early.grace_steps, early.reduction_factor, max_steps, on_stop)


def _check_existing_trials(sweep: ResolvedSweep, payloads: list[dict[str, Any]]) -> None:
    """Refuse to continue trials that were started with other settings (the sweep file changed since)."""
    changed = []
    for payload in payloads:
        path = Path(payload["out_dir"]) / run_files.CONFIG
        if not path.is_file():
            continue
        try:
            existing = run_files.read_json(path).get("config") or {}
        except (OSError, ValueError):
            continue
        keys = sorted(k for k in set(existing) | set(payload["config"]) if existing.get(k) != payload["config"].get(k))
        if keys:
            changed.append(f"  {payload['domain']}/{payload['name']}: {', '.join(keys)} changed")
    if changed:
        shown = "\n".join(changed[:10]) + (f"\n  ... and {len(changed) - 10} more" if len(changed) > 10 else "")
        raise UserError(
            f"{sweep.results_root}: holds trials started with other settings than {sweep.sweep_file} gives now:\n"
            f"{shown}\nRun with --fresh to move the old results aside and start over, or give the sweep a new name."
        )


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """Hold a lock on the results folder for the whole run: a second `run` on it refuses instead of racing."""
    with open(root / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            raise UserError(f"{root}: another `nada-sweep run` (pid {owner}) is using this results folder; wait for "
                            "it to finish or stop it first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def move_aside(root: Path, console: Console) -> Path | None:
    """--fresh: rename the old results folder (never delete it)."""
    if not root.exists():
        return None
    with _exclusive(root):
        pass
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = root.with_name(f"{root.name}.old-{stamp}")
    counter = 2
    while target.exists():
        target, counter = root.with_name(f"{root.name}.old-{stamp}-{counter}"), counter + 1
    root.rename(target)
    _say(console, Text(f"--fresh: moved the previous results to {target} (nothing was deleted)"))
    return target


def collect_outcomes(sweep: ResolvedSweep) -> list[TrialOutcome]:
    """Each trial's state as its folder records it."""
    outcomes = []
    for trial in sweep.trials:
        folder = sweep.trial_dir(trial)
        try:
            status = RunFolder(folder).status() or {}
        except (OSError, ValueError):
            status = {}
        outcomes.append(TrialOutcome(trial.domain, trial.name, folder, status.get("status") or "pending",
                                     status.get("error")))
    return outcomes


def _finish(sweep: ResolvedSweep, outcomes: list[TrialOutcome], elapsed: float, console: Console) -> int:
    """The closing summary: per-domain best, failures with their errors, where everything is; the exit code."""
    failed = [o for o in outcomes if o.status in (FAILED, DIVERGED)]
    unfinished = [o for o in outcomes if o.status not in (run_files.FINISHED, STOPPED, FAILED, DIVERGED)]
    succeeded = len(outcomes) - len(failed) - len(unfinished)
    report_index = _report(sweep, console)
    _say(console, Text(f"{succeeded}/{len(outcomes)} trials succeeded, {len(failed)} failed, {len(unfinished)} "
                       f"unfinished ({elapsed:.0f}s)", style="bold"))
    for outcome in failed:
        error = (outcome.error or "no error recorded").strip().splitlines()[0][:300]
        _say(console, Text(f"  {outcome.status}: {outcome.domain}/{outcome.name}: {error}", style="red"))
    if failed:
        _say(console, Text(f"  (details in each trial's status.json under {sweep.results_root / 'trials'}; "
                           "running the same command again retries failed trials)"))
    _say(console, Text(f"results: {sweep.results_root}"))
    if report_index:
        _say(console, Text(f"report: {report_index}"))
    if sweep.demo:
        _say(console, Text(DEMO_NOTE, style="yellow"))
    if unfinished:
        _say(console, Text(f"{len(unfinished)} trials did not finish (interrupted); run the same command again to "
                           "continue them -- finished trials are not rerun", style="yellow"))
        return EXIT_INTERRUPTED
    return EXIT_TRIALS_FAILED if failed else EXIT_OK


def _report(sweep: ResolvedSweep, console: Console) -> Path | None:
    """Best-per-domain table and the HTML report; a report problem never hides the sweep's outcome."""
    from nada_sweep.report import build_report, print_best_table

    try:
        print_best_table(sweep.results_root, console)
        return build_report(sweep.results_root, console=console)
    except Exception as error:  # the trials' results are on disk either way; say how to retry the report
        _say(console, Text(f"report failed: {type(error).__name__}: {error}; rebuild it with "
                           f"`nada-sweep report {sweep.results_root}`", style="red"))
        return None
