"""Searchers that learn per domain: one optuna or hyperopt searcher for each domain, behind one Tune Searcher.

CLIP scores of different prompts are not comparable ("sketch" scores higher than "Neanderthal" whatever the
settings), so one searcher fed every domain's results would chase the easy domains. `PerDomainSearch` keeps a
searcher per domain: each suggestion comes from one domain's searcher, for that domain, and each result is told
only to the searcher that suggested it. Each domain gets `num_samples` trials; domains take turns.

The whole state (every domain's searcher and the trials it suggested) is what Tune's searcher checkpointing
saves (`save` / `restore`), and it is also written to results/<sweep>/search.pkl after every suggestion and
every result, so a rerun of `run` continues each searcher where it stopped: suggested trials that did not
finish (interrupted, failed) run again first, with the same values in the same folders, before anything new.
"""

from __future__ import annotations

import hashlib
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from nada_sweep import metric_rules, run_files
from nada_sweep.errors import UserError
from nada_sweep.run_files import RunFolder
from nada_sweep.sweep import space
from nada_sweep.sweep.plan import ResolvedSweep
from nada_sweep.sweep.trainable import PACK_KEY, PackSpec

STATE_FILE = "search.pkl"  # in the sweep's results folder
_FORMAT = 1


@dataclass
class Suggested:
    """One trial a domain's searcher suggested, as the state records it."""

    seq: int  # its place among the domain's trials: 0, 1, ...
    index: int  # its place among all the sweep's trials (Tune's trial folders are named by it)
    name: str  # the trial's folder name
    params: dict[str, Any]
    told: bool = False  # its result has been given to the domain's searcher

    def plan(self, domain: str) -> space.TrialPlan:
        return space.TrialPlan(domain, self.name, 0, self.params)  # repeat 0: one seed, so trials differ by values


def tune_space(dims: list[space.SearchDim]) -> dict[str, Any]:
    """The search dimensions as Tune domains; a choice is offered as the index of its value."""
    from ray import tune

    domains: dict[str, Any] = {}
    for dim in dims:
        if dim.kind == "choice":
            # Indices, because values may be mappings (a mapper block), which neither library can hold.
            domains[dim.field] = tune.choice(list(range(len(dim.values))))
        elif dim.kind == "uniform":
            domains[dim.field] = tune.uniform(*dim.values)
        elif dim.kind == "loguniform":
            domains[dim.field] = tune.loguniform(*dim.values)
        elif dim.kind == "randint":
            domains[dim.field] = tune.randint(dim.values[0], dim.values[1] + 1)  # Tune excludes the upper bound
        else:
            raise ValueError(f"{dim.field}: a {dim.kind} entry cannot be searched adaptively")
    return domains


def _values(dims: list[space.SearchDim], suggested: dict[str, Any]) -> dict[str, Any]:
    """A searcher's suggestion as settings (choice indices mapped back to their values)."""
    params: dict[str, Any] = {}
    for dim in dims:
        raw = suggested[dim.field]
        if dim.kind == "choice":
            params[dim.field] = dim.values[int(raw)]
        elif dim.kind == "randint":
            params[dim.field] = int(round(raw))
        else:
            params[dim.field] = float(raw)
    return params


def domain_seed(search_seed: int, domain: str) -> int:
    """Each domain's searcher has its own seed, so adding a domain changes no other domain's suggestions."""
    digest = hashlib.sha256(f"nada-sweep search/{search_seed}/{domain}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & (2**31 - 1)


def new_searcher(sweep: ResolvedSweep, domain: str) -> Searcher:
    """A fresh optuna (TPE) or hyperopt (TPE) searcher for one domain, through Tune's own wrappers."""
    seed = domain_seed(sweep.config.search_seed, domain)
    metric, mode, startup = sweep.config.select_metric, sweep.select_mode, sweep.search_startup
    domains = tune_space(sweep.search)
    if sweep.config.search_alg == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # it announces every study it creates
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
        return OptunaSearch(OptunaSearch.convert_search_space(domains), metric=metric, mode=mode, sampler=sampler)
    from ray.tune.search.hyperopt import HyperOptSearch

    return HyperOptSearch(HyperOptSearch.convert_search_space(domains), metric=metric, mode=mode,
                          n_initial_points=startup, random_state_seed=seed)


def _saved(searcher: Searcher) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "searcher.pkl"
        searcher.save(str(path))
        return path.read_bytes()


def _restored(searcher: Searcher, data: bytes) -> Searcher:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "searcher.pkl"
        path.write_bytes(data)
        searcher.restore(str(path))
    return searcher


class PerDomainSearch(Searcher):
    """Routes Tune's suggestions and results per domain; `make_spec(plan, index)` builds a trial's spec (a pack
    of one: each suggestion is one trial).

    `state_file`: where the state is kept between runs (None: nowhere, e.g. in tests); an existing one is
    continued, and refused (UserError) when it was made with other search settings.
    """

    def __init__(self, sweep: ResolvedSweep, make_spec: Callable[[space.TrialPlan, int], PackSpec],
                 state_file: Path | None = None) -> None:
        # No metric for Tune itself: it would then demand it of every result, replayed and failed ones included.
        super().__init__()
        self._sweep = sweep
        self._make_spec = make_spec
        self._state_file = state_file
        self._metric_name = sweep.config.select_metric
        self._domains = [domain.name for domain in sweep.domains]
        self._searchers = {name: new_searcher(sweep, name) for name in self._domains}
        self._trials: dict[str, list[Suggested]] = {name: [] for name in self._domains}
        self._other_domains: dict[str, Any] = {}  # saved state of domains the sweep no longer has, kept as is
        self._next_index = 0
        self._live: dict[str, tuple[str, int]] = {}  # Tune trial id -> (domain, seq)
        self._best: dict[str, float] = {}  # Tune trial id -> its best value of the metric so far
        self._redo: list[tuple[str, Suggested]] = []
        if state_file is not None and state_file.exists():
            self.restore(str(state_file))

    # -- what the driver asks ------------------------------------------------------------------------------

    def suggested(self) -> list[tuple[space.TrialPlan, int]]:
        """Every trial suggested so far (this run and earlier ones), with its index, in suggestion order."""
        found = [(trial.plan(domain), trial.index) for domain, trials in self._trials.items() for trial in trials]
        return sorted(found, key=lambda item: item[1])

    def history(self, domain: str) -> list[Suggested]:
        return list(self._trials[domain])

    def domain_searcher(self, domain: str) -> Searcher:
        # Not named `searcher`: Tune takes anything with a `searcher` attribute for a wrapper around one.
        return self._searchers[domain]

    # -- Tune's Searcher interface -------------------------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # metric, mode and space are the sweep's; Tune's experiment-wide ones do not apply

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._redo:
            domain, trial = self._redo.pop(0)
        else:
            domain = self._next_domain()
            if domain is None:
                return Searcher.FINISHED
            seq = len(self._trials[domain])
            raw = self._searchers[domain].suggest(_searcher_id(domain, seq))
            if raw is None:
                return None
            params = _values(self._sweep.search, raw)
            name = f"{seq:03d}_{space.trial_name(self._sweep.search, params)}"
            trial = Suggested(seq, self._next_index, name, params)
            self._trials[domain].append(trial)
            self._next_index += 1
            self._persist()
        self._live[trial_id] = (domain, trial.seq)
        spec = self._make_spec(trial.plan(domain), trial.index)
        return {PACK_KEY: spec.model_dump(mode="json")}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        value = result.get(self._metric_name)
        if trial_id in self._live and metric_rules.is_better(self._metric_name, value, self._best.get(trial_id)):
            self._best[trial_id] = float(value)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self._live:
            return
        if result:
            self.on_trial_result(trial_id, result)  # Tune leaves the result that stops a trial out of those
        domain, seq = self._live.pop(trial_id)
        best = self._best.pop(trial_id, None)
        trial = self._trials[domain][seq]
        if trial.told:  # a failed trial run again: its searcher has its answer already
            return
        # The trial's best evaluation is its score (the report ranks trials by it too); a failed trial (e.g.
        # diverged at a high lr) is a failure, whatever it reached before.
        told = None if error or best is None else {self._metric_name: best}
        self._searchers[domain].on_trial_complete(_searcher_id(domain, seq), told, error=error)
        trial.told = True
        self._persist()

    def save(self, checkpoint_path: str) -> None:
        state = {
            "format": _FORMAT,
            "fingerprint": self._fingerprint(),
            "next_index": self._next_index,
            "domains": {
                **self._other_domains,
                **{name: {"trials": [asdict(trial) for trial in self._trials[name]],
                          "searcher": _saved(self._searchers[name])} for name in self._domains},
            },
        }
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(state, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            state = pickle.load(handle)
        saved, now = state.get("fingerprint", {}), self._fingerprint()
        changed = [key for key in now if saved.get(key) != now[key]]
        if changed:
            raise UserError(
                f"{checkpoint_path}: the search saved here was made with other settings than "
                f"{self._sweep.sweep_file} gives now ({', '.join(changed)} changed); run with --fresh to move the "
                "old results aside and start over, or give the sweep a new name")
        self._next_index = state["next_index"]
        for name, entry in state["domains"].items():
            if name not in self._searchers:
                self._other_domains[name] = entry
                continue
            self._searchers[name] = _restored(new_searcher(self._sweep, name), entry["searcher"])
            self._trials[name] = [Suggested(**trial) for trial in entry["trials"]]
        unfinished = [(name, trial) for name in self._domains for trial in self._trials[name]
                      if not RunFolder(self._sweep.trial_dir(trial.plan(name))).state().done]
        self._redo = sorted(unfinished, key=lambda item: item[1].index)

    # -- inside --------------------------------------------------------------------------------------------

    def _next_domain(self) -> str | None:
        """The domain with the fewest trials so far that is still under its budget (catalog order breaks ties)."""
        open_domains = [name for name in self._domains if len(self._trials[name]) < self._sweep.config.num_samples]
        return min(open_domains, key=lambda name: len(self._trials[name]), default=None)

    def _fingerprint(self) -> dict[str, Any]:
        """What a saved search must agree with to be continued (num_samples may grow; domains may be added)."""
        config = self._sweep.config
        return {
            "search_alg": config.search_alg,
            "search": {dim.field: dim.to_yaml() for dim in self._sweep.search},
            "select_metric": config.select_metric,
            "search_seed": config.search_seed,
            "search_startup": config.search_startup,  # as given: its default follows num_samples, which may grow
        }

    def _persist(self) -> None:
        if self._state_file is not None:
            run_files.atomic_write(self._state_file, lambda tmp: self.save(str(tmp)))


def _searcher_id(domain: str, seq: int) -> str:
    # Stable across runs (Tune's trial ids are not), so a restored searcher recognises its own trials.
    return f"{domain}#{seq}"
