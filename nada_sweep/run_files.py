"""The on-disk contract: what a run folder and a sweep folder hold, trial statuses, atomic writes, locks.

The trainer and the sweep write these files; the report reads them. Everything readers depend on is written
atomically (temporary file, fsync, rename), so a crash or a kill never leaves half a file behind.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nada_sweep.paths import output_folder_problem, shown

CONFIG = "config.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
STATE = "state.pt"
GENERATOR = "generator.pt"
DOMAIN = "domain.pt"  # light parametrizations: the offsets alone, beside the folded generator.pt
MAPPER = "mapper.pt"  # beside the generator it was trained on
SAMPLES = "samples"
SOURCE_SAMPLES = "source.png"
MAPPER_SAMPLES = "mapper.png"
MAPPER_METRICS = "mapper_metrics.json"

# The one wording of the notice that results come from random-weight models (PNG text chunks, config.json,
# the terminal, the gallery).
RANDOM_WEIGHT_LABEL = "RANDOM-WEIGHT DEMO MODEL: images and numbers show the pipeline works, not real results"


class Status(enum.StrEnum):
    """A trial's state as its status.json records it."""

    PENDING = "pending"  # no status.json yet: created, not started
    RUNNING = "running"
    OK = "ok"  # finished every step
    FAILED = "failed"
    DIVERGED = "diverged"  # the loss or the metrics became NaN or infinite
    INTERRUPTED = "interrupted"  # stopped by Ctrl+C or the driver; the next run continues it
    STOPPED = "stopped"  # stopped early by the per-domain scheduler

    @classmethod
    def of(cls, record: Any) -> Status:
        """The status a status.json record holds; a missing or damaged record reads as PENDING."""
        try:
            return cls(record.get("status", cls.PENDING)) if isinstance(record, dict) else cls.PENDING
        except ValueError:
            return cls.PENDING

    @property
    def done(self) -> bool:
        """Finished for good: a rerun does not train it again."""
        return self in (Status.OK, Status.STOPPED)

    @property
    def failed(self) -> bool:
        return self in (Status.FAILED, Status.DIVERGED)

    @property
    def final(self) -> bool:
        """Never trained by a later run: done, or diverged (training again would diverge again)."""
        return self.done or self is Status.DIVERGED


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` and rename the result onto `path` only once it is complete and on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def output_file_problem(path: Path, suffixes: tuple[str, ...] = ()) -> str | None:
    """Why atomic_write cannot write the file `path` (a folder there, a parent it cannot create or write, a
    suffix outside `suffixes` when given), or None. Creates nothing."""
    if not path.name or path.name in (".", ".."):
        return f"{shown(path)} names no file"
    if path.is_dir():
        return f"{shown(path)} is a folder; give the name of the file to write"
    if suffixes and path.suffix.lower() not in suffixes:
        return f"{shown(path)}: the file is written as {'/'.join(suffixes)}; name it *{suffixes[0]}"
    if path.exists() and not os.access(path, os.W_OK):
        return f"no permission to write {shown(path)}"
    problem = output_folder_problem(path.parent)
    return f"cannot write {shown(path)}: {problem}" if problem else None


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class LockHeld(Exception):
    """Another process holds the lock; `holder` is what it wrote into the lock file (its pid)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is locked by {holder}")
        self.holder = holder


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (never waits: raises LockHeld); the lock file records our pid."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise LockHeld(path, handle.read().strip() or "unknown") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_holder(path: Path) -> str | None:
    """What the holder of the lock at `path` wrote into it (its pid), or None when nobody holds it.

    For onlookers (`nada-sweep status`): it never creates the file, and holds a shared lock only for the instant
    of the test.
    """
    try:
        handle = open(path)
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "unknown"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def manifest_entries(manifest: Path) -> dict[str, dict[str, Any]]:
    """The per-domain entries of a media manifest written earlier (empty when missing or damaged)."""
    try:
        entries = read_json(manifest).get("domains", [])
    except (OSError, ValueError, AttributeError):
        return {}
    return {e["domain"]: e for e in entries if isinstance(e, dict) and isinstance(e.get("domain"), str)}


def sample_name(step: int) -> str:
    return f"step_{step:06d}.png"


class RunFolder:
    """Paths and small readers/writers of one adaptation run's folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def samples(self) -> Path:
        return self.root / SAMPLES

    def status(self) -> dict[str, Any] | None:
        """status.json as written, or None when it is missing, unreadable or not a mapping (a damaged file)."""
        try:
            data = read_json(self.path(STATUS))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def state(self) -> Status:
        """The trial's Status; a missing or damaged status.json reads as PENDING."""
        return Status.of(self.status())

    def is_finished(self) -> bool:
        return self.state() is Status.OK

    def write_status(self, **fields: Any) -> None:
        write_json(self.path(STATUS), fields)

    def update_status(self, status: Status, error: str | None, **extra: Any) -> None:
        """Change the status, keeping what was recorded before (step, best_step)."""
        self.write_status(**{**(self.status() or {}), "status": status, "error": error, **extra})

    def history(self) -> list[dict[str, Any]]:
        """Every eval line of metrics.jsonl; a torn last line (a crash mid-append) is ignored."""
        path = self.path(METRICS)
        if not path.exists():
            return []
        lines = []
        for line in path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return lines

    def kept_history(self) -> list[dict[str, Any]]:
        """The eval lines that stand: all of an ended run's; of an unfinished one, those up to the step its
        status records, where its checkpoint exists (a continued run keeps those and starts over without one)."""
        record = self.status() or {}
        if Status.of(record).final:
            return self.history()
        if not self.path(STATE).exists():
            return []
        step = record.get("step", 0)
        return [entry for entry in self.history() if entry.get("step", 0) <= step]

    def write_history(self, history: list[dict[str, Any]]) -> None:
        # Rewritten whole (it is small) so that a resumed run never holds lines past its checkpoint.
        text = "".join(json.dumps(entry) + "\n" for entry in history)
        atomic_write(self.path(METRICS), lambda tmp: tmp.write_text(text))


class SweepFolder:
    """results/<sweep>/: the resolved config, the trials' run folders, and what the driver keeps beside them."""

    RESOLVED = "sweep.resolved.yaml"
    TRIALS = "trials"
    TUNE = "tune"  # Ray Tune's experiment state, when the sweep sets no other storage
    BANK = "bank"  # the shared frozen bank (nada_sweep.adapt.bank)
    LOCK = ".lock"  # held by the one `run` using the folder
    BEST = "best"  # each domain's best weights, copied by the report
    # Written by `report --photos` / `--videos` (nada_sweep.media) and shown by the gallery; each folder's
    # MANIFEST lists its files and the trial that rendered each.
    PHOTOS = "photos"  # the photo row, its reconstruction, each domain's rendering of the same codes
    VIDEOS = "videos"  # each domain's morph video
    # Written at the end of `run` and by `report` (nada_sweep.media.domain_morphs): each light-mode winner's
    # offsets scaled from 0 (the source) to 1 (the domain).
    MORPHS = "morphs"
    MANIFEST = "manifest.json"

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @property
    def resolved(self) -> Path:
        return self.root / self.RESOLVED

    @property
    def trials(self) -> Path:
        return self.root / self.TRIALS

    @property
    def tune(self) -> Path:
        return self.root / self.TUNE

    @property
    def bank(self) -> Path:
        return self.root / self.BANK

    @property
    def lock(self) -> Path:
        return self.root / self.LOCK

    @property
    def best(self) -> Path:
        return self.root / self.BEST

    @property
    def photos(self) -> Path:
        return self.root / self.PHOTOS

    @property
    def videos(self) -> Path:
        return self.root / self.VIDEOS

    @property
    def morphs(self) -> Path:
        return self.root / self.MORPHS

    def trial(self, domain: str, trial: str) -> RunFolder:
        return RunFolder(self.trials / domain / trial)
