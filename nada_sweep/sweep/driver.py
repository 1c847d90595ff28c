"""`nada-sweep validate` and `nada-sweep run` on the driver: the Tuner, resume, the lock, the statuses of trials
that Tune stopped, the report at the end (Ray itself is started or joined by nada_sweep.sweep.cluster).

Each trial runs in its own folder, results/<sweep>/trials/<domain>/<trial>/, named from the searched values so
that a rerun finds it again; trials that can train together are grouped into packs (nada_sweep.sweep.packs), one
Tune trial per pack, and the display and trackers see the members as trials (nada_sweep.sweep.members). Resuming therefore needs nothing from Ray: running the same command again skips
finished trials (their recorded metrics are replayed to Tune), continues interrupted ones from their state.pt,
and retries failed ones. Tune's own experiment state (storage) is only bookkeeping. With an adaptive search
(optuna, hyperopt) the trials are suggested as results come in, by one searcher per domain whose state is kept
in the results folder too (nada_sweep.sweep.search).
"""

from __future__ import annotations

import contextlib
import logging
import os
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
from nada_sweep.sweep import cluster
from nada_sweep.sweep.live_report import LiveReport
from nada_sweep.sweep.load import load_sweep
from nada_sweep.sweep.plan import ResolvedSweep
from nada_sweep.sweep.packs import group_packs
from nada_sweep.sweep.progress import SweepProgress, TrialOutcome, print_plan, print_summary, say
from nada_sweep.sweep.space import TrialPlan
from nada_sweep.sweep.trainable import PACK_KEY, BankSpec, PackSpec, TrialSpec, pack_of, run_pack

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from nada_sweep.adapt.settings import AdaptConfig
    from nada_sweep.sweep.search import PerDomainSearch

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
    say(console, Text.assemble(("valid", "green"), f": {sweep.sweep_file} ({sweep.trial_total} trials)"))
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
    address: None starts Ray locally; "auto", "host:port" or "ray://host:port" joins a running cluster.
    offline: never download CLIP weights; otherwise missing ones are fetched here, before any trial starts.
    """
    from nada_sweep.models.clip_models import ensure_downloaded

    console = console or Console()
    if address is not None:
        cluster.check_address(address)
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


def trial_spec(sweep: ResolvedSweep, index: int, plan: TrialPlan | None = None) -> TrialSpec:
    """Everything trial `index` (`plan`, default sweep.trials[index]) needs; it travels in the Tune config."""
    plan = plan or sweep.trials[index]
    config = sweep.adapt_config(plan)
    return TrialSpec(
        index=index,
        domain=plan.domain,
        name=plan.name,
        out_dir=str(sweep.trial_dir(plan)),
        steps=config.steps,
        config=config.model_dump(mode="json"),
        labels={"sweep": sweep.name, "domain": plan.domain, "trial": plan.name, "params": plan.params,
                "demo": sweep.demo},
    )


def pack_spec(sweep: ResolvedSweep, index: int, members: list[TrialSpec]) -> PackSpec:
    resources = sweep.config.resources
    return PackSpec(index=index, members=members, cpus=resources.cpus, gpus=resources.gpus)


def plan_packs(sweep: ResolvedSweep, specs: list[TrialSpec], at_once: int = 1) -> list[PackSpec]:
    """The trials' specs (in sweep.trials order) in packs of at most sweep.pack_size, spread over at least
    `at_once` packs (those that train at the same time) while there are trials enough, longest pack first."""
    packs = group_packs([spec.adapt_config() for spec in specs], [spec.domain for spec in specs],
                        sweep.pack_size, at_once)
    return [pack_spec(sweep, index, [specs[i] for i in members]) for index, members in enumerate(packs)]


def _plan_frozen_bank(sweep: ResolvedSweep, specs: list[TrialSpec], others: list[AdaptConfig]) -> None:
    """Where each trial's shared frozen bank lives and how many steps it must cover (nada_sweep.adapt.bank).

    `others`: configs of trials not in `specs` that may share a bank with them (an adaptive search's bounds).
    """
    from nada_sweep.adapt.bank import bank_entries

    sizes = bank_entries([spec.adapt_config() for spec in specs] + others)
    for spec, size in zip(specs, sizes):
        spec.bank = BankSpec(dir=str(SweepFolder(sweep.results_root).bank), entries=size)


def adaptive_spec(sweep: ResolvedSweep) -> Callable[[TrialPlan, int], PackSpec]:
    """The spec maker of an adaptive search: a suggested trial as a pack of one, its bank sized for every trial
    possible (a searcher suggests one trial at a time, so its trials are not packed)."""
    bounds = [sweep.adapt_config(plan) for plan in sweep.probe_trials()]

    def make(plan: TrialPlan, index: int) -> PackSpec:
        spec = trial_spec(sweep, index, plan)
        _plan_frozen_bank(sweep, [spec], bounds)
        return pack_spec(sweep, index, [spec])

    return make


def _max_steps(sweep: ResolvedSweep, specs: list[TrialSpec]) -> dict[str, int]:
    """The most steps any trial of each domain can run (an adaptive search: over every value it may suggest)."""
    budgets = [(s.domain, s.steps) for s in specs] if not sweep.adaptive else [
        (plan.domain, sweep.adapt_config(plan).steps) for plan in sweep.probe_trials()]
    most: dict[str, int] = {}
    for domain, steps in budgets:
        most[domain] = max(most.get(domain, 0), steps)
    return most


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
    """Run every trial of `sweep` on Ray Tune, then print the summary and build the report.

    Everything that can refuse the run (another run holding the folder, a cluster without the resources asked
    for, trials on disk with other settings, a saved search made differently) is checked before anything is
    written: a refused run leaves the results folder as it was, its lock file included.
    """
    console = console or Console()
    root = sweep.results_root
    _refuse_if_locked(root)
    if not fresh:  # trials and a search already on disk must match; --fresh moves them aside (once Ray fits)
        packs, searcher = _trial_packs(sweep, 1)
        _check_existing_trials(sweep, [spec for pack in packs for spec in pack.members])
    with cluster.ray_for_run(address, verbose) as release_ray:
        cluster.check_cluster(sweep)
        at_once = sweep.packs_at_once(*cluster.cluster_resources())
        if fresh:
            move_aside(root, console)
            packs, searcher = _trial_packs(sweep, at_once)
        elif not sweep.adaptive:  # the same trials, now split for the cluster's packs at once
            packs, searcher = _trial_packs(sweep, at_once)
        root.mkdir(parents=True, exist_ok=True)
        with _exclusive(root):
            started = time.monotonic()
            try:
                _fit(sweep, packs, searcher, verbose=verbose, console=console)
            finally:
                release_ray()  # the report needs no Ray
            outcomes = collect_outcomes(sweep, searcher)
            report_index = _report(sweep, console)
            print_summary(sweep, outcomes, time.monotonic() - started, report_index, console)
            return exit_code(outcomes)


def _trial_packs(sweep: ResolvedSweep, at_once: int) -> tuple[list[PackSpec], PerDomainSearch | None]:
    """The packs to run (see plan_packs) and, for an adaptive search, its searcher (continuing a saved search;
    packs of one)."""
    if not sweep.adaptive:
        specs = [trial_spec(sweep, i) for i in range(len(sweep.trials))]
        _plan_frozen_bank(sweep, specs, [])
        return plan_packs(sweep, specs, at_once), None
    from nada_sweep.sweep.search import STATE_FILE, PerDomainSearch

    make = adaptive_spec(sweep)
    searcher = PerDomainSearch(sweep, make, sweep.results_root / STATE_FILE)
    return [make(plan, index) for plan, index in searcher.suggested()], searcher


def _fit(sweep: ResolvedSweep, packs: list[PackSpec], searcher: PerDomainSearch | None, *, verbose: bool,
         console: Console) -> None:
    """Run the packs on Tune: `packs` as a fixed list, or, with `searcher`, as it suggests them (packs of one)."""
    if not verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # with verbose=0 the legacy output engine prints nothing
        # Tune logs advice (e.g. resume with Tuner.restore) that does not apply to this command.
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    from ray import tune

    from nada_sweep.sweep.members import MemberEvents
    from nada_sweep.sweep.trackers import tracker_callbacks

    # Tune's own CSV, JSON and TensorBoard files per Tune trial would mix a pack's members; each member's
    # folder and the trackers (members.MemberEvents) are the record.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"

    write_resolved(sweep)
    title = f"{sweep.name}" + (" [DEMO]" if sweep.demo else "")
    progress = SweepProgress(title, sweep.trial_total, sweep.config.select_metric, console)
    live_report = LiveReport(sweep.results_root, sweep.config.report_every)
    resources = sweep.config.resources
    if searcher is None:
        param_space = {PACK_KEY: tune.grid_search([pack.model_dump(mode="json") for pack in packs])}
    else:
        param_space = {}  # every trial's config comes from the searcher
    referee = _referee(sweep, packs)
    trainable = tune.with_parameters(run_pack, referee=referee) if referee is not None else run_pack
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": resources.cpus, "gpu": resources.gpus}),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=1 if searcher is None else -1,  # -1: until the searcher says it has finished
            max_concurrent_trials=sweep.config.max_concurrent,
            reuse_actors=True,  # a worker keeps its loaded generator/CLIP models for the next pack
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=time.strftime("run-%Y%m%d-%H%M%S"),
            storage_path=sweep.storage,
            failure_config=tune.FailureConfig(max_failures=sweep.config.retries),
            callbacks=[MemberEvents([progress, live_report, *tracker_callbacks(sweep)],
                                    retried=sweep.config.retries > 0)],
            verbose=1 if verbose else 0,
        ),
    )
    try:
        tuner.fit()
    finally:
        progress.close()
        live_report.close()
        _settle_statuses(progress.started - progress.errored.keys())
        _settle_lost_trials(progress.errored)


def _settle_statuses(stopped_by_tune: set[str]) -> None:
    """Give each trial that Tune stopped (rather than one that failed) a status saying so, once all are gone.

    `stopped_by_tune`: folders of the trials that ran in this run and did not fail for good. Tune stops a pack
    by raising SystemExit inside a report call, or by ending its process; a member may record that as a failure
    or not at all. The driver knows better: interrupted (resumable). (A trial stopped early records that itself.)
    """
    for out_dir in stopped_by_tune:
        folder = RunFolder(out_dir)
        if folder.state() in (Status.FAILED, Status.RUNNING):
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


def _trial_name(trial: Trial) -> str:
    pack = pack_of(trial)
    first, more = pack.members[0], len(pack.members) - 1
    return f"{pack.index:04d}-{first.domain}-{first.name}{f'+{more}' if more else ''}"[:120]


def _referee(sweep: ResolvedSweep, packs: list[PackSpec]) -> Any:
    """The per-domain early-stopping actor every pack asks about its members (nada_sweep.sweep.scheduler), or
    None when early stopping is off."""
    early = sweep.config.early_stopping
    if early is None:
        return None
    from nada_sweep.sweep.scheduler import start_referee

    metric = early.metric or sweep.config.select_metric
    return start_referee(metric, metric_rules.mode(metric), early.grace_steps, early.reduction_factor,
                         _max_steps(sweep, [spec for pack in packs for spec in pack.members]))


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
        raise _locked(root, held.holder) from None


def _refuse_if_locked(root: Path) -> None:
    """Refuse at once, touching nothing, when another run holds the results folder (_exclusive settles races)."""
    holder = run_files.lock_holder(SweepFolder(root).lock)
    if holder is not None:
        raise _locked(root, holder)


def _locked(root: Path, holder: str) -> UserError:
    return UserError(f"{root}: another `nada-sweep run` (pid {holder}) is using this results folder; wait for it "
                     "to finish or stop it first")


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


def collect_outcomes(sweep: ResolvedSweep, searcher: PerDomainSearch | None = None) -> list[TrialOutcome]:
    """Each trial's state as its folder records it (with a searcher: each trial it suggested)."""
    outcomes = []
    for trial in [plan for plan, _ in searcher.suggested()] if searcher else sweep.trials:
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
    """Best-per-domain table, the HTML report and the trackers' leaderboard tables; a report problem never
    hides the sweep's outcome."""
    from nada_sweep.media.domain_morphs import morph_rows
    from nada_sweep.report import build_report, print_best_table

    try:
        morph_rows(sweep.results_root, console=console)
        print_best_table(sweep.results_root, console)
        index = build_report(sweep.results_root, console=console)
    except Exception as error:  # the trials' results are on disk either way; say how to retry the report
        say(console, Text(f"report failed: {type(error).__name__}: {error}; rebuild it with "
                           f"`nada-sweep report {sweep.results_root}`", style="red"))
        return None
    _log_leaderboard(sweep, console)
    return index


def _log_leaderboard(sweep: ResolvedSweep, console: Console) -> None:
    from nada_sweep.sweep.trackers import log_leaderboard

    root = sweep.results_root
    try:
        log_leaderboard(sweep, run_files.read_json(root / "leaderboard.json"), (root / "leaderboard.md").read_text())
    except Exception as error:  # a tracker that is down must not turn a finished sweep into a failure
        say(console, Text(f"trackers: the leaderboard was not logged: {type(error).__name__}: {error}",
                          style="yellow"))
