"""`nada-sweep validate` and `nada-sweep run` on the driver: Ray start/join, the Tuner, resume, the lock, and
the statuses of trials that Tune stopped.

Each trial runs in its own folder, results/<sweep>/trials/<domain>/<trial>/, named from the searched values so
that a rerun finds it again. Resuming therefore needs nothing from Ray: running the same command again skips
finished trials (their recorded metrics are replayed to Tune), continues interrupted ones from their state.pt,
and retries failed ones. Tune's own experiment state (storage) is only bookkeeping.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

from nada_sweep import metric_rules, run_files
from nada_sweep.adapt.settings import changed_settings
from nada_sweep.errors import UserError
from nada_sweep.run_files import RunFolder, Status, SweepFolder
from nada_sweep.sweep.load import load_sweep
from nada_sweep.sweep.plan import ResolvedSweep
from nada_sweep.sweep.progress import SweepProgress, TrialOutcome, print_plan, print_summary, say
from nada_sweep.sweep.trainable import SPEC_KEY, BankSpec, TrialSpec, run_trial, spec_of

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from nada_sweep.adapt.settings import AdaptConfig

EXIT_OK = 0
EXIT_TRIALS_FAILED = 1
EXIT_INTERRUPTED = 130


# ----------------------------------------------------------------------------------------------------------
# Commands (called by nada_sweep.cli)


def validate_command(path: str | Path, *, demo: bool = False, console: Console | None = None) -> int:
    """Load and check the sweep, print its trial table; starts nothing. Bad input raises UserError."""
    console = console or Console()
    sweep = load_sweep(path, demo=demo)
    print_plan(sweep, console)
    say(console, Text.assemble(("valid", "green"), f": {sweep.sweep_file} ({len(sweep.trials)} trials)"))
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
        ensure_downloaded(sweep.clip_names(), offline=offline)
    print_plan(sweep, console)
    if dry_run:
        console.print("dry run: nothing started")
        return EXIT_OK
    return run_sweep(sweep, fresh=fresh, address=address, verbose=verbose, console=console)


# ----------------------------------------------------------------------------------------------------------
# The trials


def trial_spec(sweep: ResolvedSweep, index: int) -> TrialSpec:
    """Everything trial `index` needs (it travels in the Tune config and its experiment state)."""
    plan = sweep.trials[index]
    config = sweep.adapt_config(plan)
    return TrialSpec(
        index=index,
        domain=plan.domain,
        name=plan.name,
        out_dir=str(sweep.trial_dir(plan)),
        steps=config.steps,
        cpus=sweep.config.resources.cpus,
        gpus=sweep.config.resources.gpus,
        config=config.model_dump(mode="json"),
        labels={"sweep": sweep.name, "domain": plan.domain, "trial": plan.name, "params": plan.params,
                "demo": sweep.demo},
    )


def longest_first(sweep: ResolvedSweep, specs: list[TrialSpec]) -> list[TrialSpec]:
    """The trials' specs (in sweep.trials order) reordered by estimated cost, largest first, ties kept in order.

    Tune starts trials in the order it is given them. Starting the longest first (longest-processing-time-first
    scheduling) lets the sweep end on short trials instead of leaving workers idle while one long trial finishes.
    """
    costs = [estimated_cost(sweep.adapt_config(plan)) for plan in sweep.trials]
    return [specs[i] for i in sorted(range(len(specs)), key=lambda i: -costs[i])]


def estimated_cost(config: AdaptConfig) -> float:
    """A trial's work in latents passed through generator and CLIP; a rough measure, used only to order trials."""
    per_step = config.batch
    if config.selects_layers:
        per_step += config.auto_layer_batch * config.auto_layer_iters / config.auto_layer_every
    mapper = config.mapper
    return config.steps * per_step + (mapper.steps * mapper.batch if mapper else 0)


def _plan_frozen_bank(sweep: ResolvedSweep, specs: list[TrialSpec]) -> None:
    """Where each trial's shared frozen bank lives and how many steps it must cover (nada_sweep.adapt.bank)."""
    from nada_sweep.adapt.bank import bank_entries

    sizes = bank_entries([sweep.adapt_config(plan) for plan in sweep.trials])
    for spec, size in zip(specs, sizes):
        spec.bank = BankSpec(dir=str(SweepFolder(sweep.results_root).bank), entries=size)


# ----------------------------------------------------------------------------------------------------------
# The run


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
        specs = [trial_spec(sweep, i) for i in range(len(sweep.trials))]
        _plan_frozen_bank(sweep, specs)
        _check_existing_trials(sweep, specs)
        specs = longest_first(sweep, specs)
        started = time.monotonic()
        with _ray_for_run(address, verbose) as release_ray:
            try:
                _fit(sweep, specs, verbose=verbose, console=console)
            finally:
                release_ray()  # the report needs no Ray
            outcomes = collect_outcomes(sweep)
            report_index = _report(sweep, console)
            print_summary(sweep, outcomes, time.monotonic() - started, report_index, console)
            return exit_code(outcomes)


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


def _fit(sweep: ResolvedSweep, specs: list[TrialSpec], *, verbose: bool, console: Console) -> None:
    if not verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # with verbose=0 the legacy output engine prints nothing
        # Tune logs advice (e.g. resume with Tuner.restore) that does not apply to this command.
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    from ray import tune


    _check_cluster(sweep)
    # Only now: a run refused for its resources leaves the resolved config of the last real run in place.
    write_resolved(sweep)
    title = f"{sweep.name}" + (" [DEMO]" if sweep.demo else "")
    progress = SweepProgress(title, len(specs), sweep.config.select_metric, console)
    stopped: dict[str, int | None] = {}
    resources = sweep.config.resources
    tuner = tune.Tuner(
        tune.with_resources(run_trial, {"cpu": resources.cpus, "gpu": resources.gpus}),
        param_space={SPEC_KEY: tune.grid_search([spec.model_dump(mode="json") for spec in specs])},
        tune_config=tune.TuneConfig(
            scheduler=_scheduler(sweep, specs, progress, stopped),
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
        status = folder.state()
        if out_dir in stopped_early and status is not Status.OK:
            folder.update_status(Status.STOPPED, None, step=stopped_early[out_dir],
                        reason=f"early stopping: {metric} behind the other trials of its domain")
        elif status in (Status.FAILED, Status.RUNNING):
            folder.update_status(Status.INTERRUPTED, None)


def _settle_lost_trials(errored: dict[str, str | None]) -> None:
    """Record as failed the trials whose process died without a word (SIGKILL, out of memory, a lost node).

    Such a trial's folder still says "running"; left so, the run would look interrupted rather than failed.
    """
    for out_dir, tune_error in errored.items():
        folder = RunFolder(out_dir)
        previous = folder.status() or {}
        if Status.of(previous) in (Status.PENDING, Status.RUNNING):
            detail = f" (Ray: {tune_error})" if tune_error else ""
            error = ("the trial's process ended without recording an error: killed, out of memory, or its Ray node "
                     f"was lost{detail}; the next run continues it from its last checkpoint")
            folder.update_status(Status.FAILED, error)


def write_resolved(sweep: ResolvedSweep) -> None:
    """sweep.resolved.yaml: the fully resolved config of the run that starts now (atomic: readers see old or new)."""
    run_files.atomic_write(SweepFolder(sweep.results_root).resolved, lambda tmp: tmp.write_text(sweep.to_yaml()))


def _early_stopping_metric(sweep: ResolvedSweep) -> str:
    early = sweep.config.early_stopping
    return (early.metric if early else None) or sweep.config.select_metric


def _trial_name(trial: Trial) -> str:
    spec = spec_of(trial)
    return f"{spec.index:04d}-{spec.domain}-{spec.name}"[:120]


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


def _scheduler(sweep: ResolvedSweep, specs: list[TrialSpec], progress: SweepProgress,
               stopped: dict[str, int | None]) -> Any:
    """FIFO, or early stopping per domain; `stopped` collects the folders of trials stopped early."""
    from ray.tune.schedulers import FIFOScheduler

    early = sweep.config.early_stopping
    if early is None:
        return FIFOScheduler()
    from nada_sweep.sweep.scheduler import PerDomainASHA

    max_steps: dict[str, int] = {}
    for spec in specs:
        max_steps[spec.domain] = max(max_steps.get(spec.domain, 0), spec.steps)
    metric = _early_stopping_metric(sweep)

    def on_stop(trial: Trial, result: dict[str, Any]) -> None:
        progress.mark_stopping(trial)
        stopped[spec_of(trial).out_dir] = result.get("step")

    return PerDomainASHA(metric, metric_rules.mode(metric), early.grace_steps, early.reduction_factor, max_steps, on_stop)


def _check_existing_trials(sweep: ResolvedSweep, specs: list[TrialSpec]) -> None:
    """Refuse to continue trials that were started with other settings (the sweep file changed since)."""
    changed = []
    for spec in specs:
        path = Path(spec.out_dir) / run_files.CONFIG
        if not path.is_file():
            continue
        try:
            existing = run_files.read_json(path).get("config") or {}
        except (OSError, ValueError):
            continue
        keys = changed_settings(existing, spec.config)
        if keys:
            changed.append(f"  {spec.domain}/{spec.name}: {', '.join(keys)} changed")
    if changed:
        shown = "\n".join(changed[:10]) + (f"\n  ... and {len(changed) - 10} more" if len(changed) > 10 else "")
        raise UserError(
            f"{sweep.results_root}: holds trials started with other settings than {sweep.sweep_file} gives now:\n"
            f"{shown}\nRun with --fresh to move the old results aside and start over, or give the sweep a new name."
        )


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """Hold a lock on the results folder for the whole run: a second `run` on it refuses instead of racing."""
    try:
        with run_files.file_lock(SweepFolder(root).lock):
            yield
    except run_files.LockHeld as held:
        raise UserError(f"{root}: another `nada-sweep run` (pid {held.holder}) is using this results folder; wait "
                        "for it to finish or stop it first") from None


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
    say(console, Text(f"--fresh: moved the previous results to {target} (nothing was deleted)"))
    return target


def collect_outcomes(sweep: ResolvedSweep) -> list[TrialOutcome]:
    """Each trial's state as its folder records it."""
    outcomes = []
    for trial in sweep.trials:
        folder = sweep.trial_dir(trial)
        run = RunFolder(folder)
        outcomes.append(TrialOutcome(trial.domain, trial.name, folder, run.state(), (run.status() or {}).get("error")))
    return outcomes


def exit_code(outcomes: list[TrialOutcome]) -> int:
    """0 when every trial succeeded (or was stopped early), 1 when some failed, 130 when some did not finish."""
    if any(not (o.status.done or o.status.failed) for o in outcomes):
        return EXIT_INTERRUPTED
    return EXIT_TRIALS_FAILED if any(o.status.failed for o in outcomes) else EXIT_OK


def _report(sweep: ResolvedSweep, console: Console) -> Path | None:
    """Best-per-domain table and the HTML report; a report problem never hides the sweep's outcome."""
    from nada_sweep.report import build_report, print_best_table

    try:
        print_best_table(sweep.results_root, console)
        return build_report(sweep.results_root, console=console)
    except Exception as error:  # the trials' results are on disk either way; say how to retry the report
        say(console, Text(f"report failed: {type(error).__name__}: {error}; rebuild it with "
                           f"`nada-sweep report {sweep.results_root}`", style="red"))
        return None
