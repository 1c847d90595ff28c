"""Search spaces from the sweep file and their expansion into a fixed, named list of trials.

The driver samples every random value itself (seeded per domain, repeat and grid cell) instead of leaving it to
Tune, so the trial list is known before Ray starts: `validate` prints exactly what `run` will do, and a rerun
finds each trial's folder under the same name, which is what makes resuming a sweep work.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from nada_sweep.errors import did_you_mean, quoted

SearchKind = Literal["grid", "choice", "uniform", "loguniform", "randint"]
RANGE_KINDS = ("uniform", "loguniform", "randint")
SPEC_KINDS = ("choice", *RANGE_KINDS)

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")
_MAX_NAME = 120


class SpecError(ValueError):
    """A problem at `loc` inside the sweep file's `search` section (the loader adds file and line)."""

    def __init__(self, loc: tuple[str | int, ...], message: str, value: Any = None, *, show_value: bool = True):
        super().__init__(message)
        self.loc = loc
        self.message = message
        self.value = value
        self.show_value = show_value


@dataclass(frozen=True)
class SearchDim:
    """One searched training setting: a grid of values, a random choice, or a random range."""

    field: str
    kind: SearchKind
    values: tuple[Any, ...]  # grid/choice: the candidates; uniform/loguniform/randint: (low, high), both inclusive

    @property
    def grid_size(self) -> int:
        return len(self.values) if self.kind == "grid" else 1

    def sample(self, rng: random.Random) -> Any:
        if self.kind == "choice":
            return self.values[rng.randrange(len(self.values))]
        low, high = self.values
        if self.kind == "uniform":
            return rng.uniform(low, high)
        if self.kind == "loguniform":
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        return rng.randint(low, high)

    def describe(self) -> str:
        if self.kind == "grid":
            return "grid " + ", ".join(_short(v) for v in self.values)
        if self.kind == "choice":
            return "random choice of " + ", ".join(_short(v) for v in self.values)
        return f"{self.kind} [{_short(self.values[0])}, {_short(self.values[1])}]"

    def to_yaml(self) -> Any:
        return list(self.values) if self.kind == "grid" else {self.kind: list(self.values)}

    def as_choice(self) -> SearchDim:
        """A grid drawn from at random instead of multiplied out (random search); other kinds unchanged."""
        return SearchDim(self.field, "choice", self.values) if self.kind == "grid" else self


@dataclass(frozen=True)
class TrialPlan:
    """One trial: a domain, the searched values it gets, and its folder name (stable across reruns)."""

    domain: str
    name: str
    repeat: int
    params: dict[str, Any] = field(default_factory=dict)


def parse_search(raw: Any, field_names: Sequence[str]) -> list[SearchDim]:
    """Turn the YAML `search` mapping into search dimensions; shape errors raise SpecError.

    The values' types and ranges are checked by the caller, which knows each field's schema.
    """
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        raise SpecError(("search",), "must be a mapping of setting -> values", raw)
    dims = []
    for name, spec in raw.items():
        loc = ("search", name)
        if name not in field_names:
            raise SpecError(loc, f"unknown setting {quoted(name)}{did_you_mean(name, field_names)}", show_value=False)
        dims.append(_parse_dim(loc, str(name), spec))
    return dims


def _parse_dim(loc: tuple[str | int, ...], name: str, spec: Any) -> SearchDim:
    if isinstance(spec, list):
        if not spec:
            raise SpecError(loc, "an empty list gives zero trials; list at least one value", spec)
        return SearchDim(name, "grid", tuple(spec))
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise SpecError(
            loc,
            "must be a list of values (grid) or one of {choice: [...]}, {uniform: [low, high]}, "
            "{loguniform: [low, high]}, {randint: [low, high]}",
            spec,
        )
    ((kind, args),) = spec.items()
    loc = (*loc, kind)
    if kind not in SPEC_KINDS:
        raise SpecError(loc, f"unknown search kind {quoted(kind)}{did_you_mean(kind, SPEC_KINDS)}", show_value=False)
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise SpecError(loc, "needs a non-empty list of values to choose from", args)
        return SearchDim(name, "choice", tuple(args))
    if not isinstance(args, list) or len(args) != 2:
        raise SpecError(loc, "needs [low, high]", args)
    low, high = args
    for bound in args:
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
            raise SpecError(loc, "low and high must be finite numbers", args)
    if kind == "randint" and not all(isinstance(bound, int) for bound in args):
        raise SpecError(loc, "randint takes whole numbers", args)
    if low > high:
        raise SpecError(loc, f"inverted range: low {low} is above high {high}", args)
    if low == high:
        raise SpecError(loc, f"empty range: low and high are both {low}; use a list [{low}] for a single value", args)
    if kind == "loguniform" and low <= 0:
        raise SpecError(loc, "loguniform needs 0 < low < high", args)
    return SearchDim(name, kind, (low, high))


def expand(domains: Sequence[str], dims: Sequence[SearchDim], num_samples: int, seed: int) -> list[TrialPlan]:
    """Every trial of the sweep, in a fixed order: domain, then repeat, then grid cell.

    Random values are drawn from a generator seeded by (seed, domain, repeat, grid cell), so adding a domain or a
    repeat never changes the values (and folder names) of the trials that already exist.
    """
    grid = [dim for dim in dims if dim.kind == "grid"]
    random_dims = [dim for dim in dims if dim.kind != "grid"]
    trials = []
    for domain in domains:
        names: set[str] = set()
        for repeat in range(num_samples):
            for cell_index, cell in enumerate(itertools.product(*(dim.values for dim in grid))):
                rng = random.Random(f"{seed}/{domain}/{repeat}/{cell_index}")
                params = {dim.field: value for dim, value in zip(grid, cell)}
                params |= {dim.field: dim.sample(rng) for dim in random_dims}
                ordered = {dim.field: params[dim.field] for dim in dims}
                name = _unique(trial_name(dims, ordered, repeat, num_samples), names)
                trials.append(TrialPlan(domain, name, repeat, ordered))
    return trials


def trial_name(dims: Sequence[SearchDim], params: Mapping[str, Any], repeat: int = 0, num_samples: int = 1
               ) -> str:
    """A folder name made of the searched values (and the repeat, when there are several)."""
    parts = [f"{dim.field}={_name_value(dim, params[dim.field])}" for dim in dims]
    if num_samples > 1:
        parts.append(f"r{repeat}")
    name = _UNSAFE.sub("_", "_".join(parts)) or "default"
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: _MAX_NAME - 11]}-{digest}"
    return name


def _name_value(dim: SearchDim, value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return _short(value)
    # Structured values (e.g. a mapper block) are named by their position in the list.
    return f"v{dim.values.index(value)}"


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _unique(name: str, taken: set[str]) -> str:
    # Two grid values can print alike at 4 significant digits; keep folders distinct.
    candidate, counter = name, 2
    while candidate in taken:
        candidate, counter = f"{name}-{counter}", counter + 1
    taken.add(candidate)
    return candidate
