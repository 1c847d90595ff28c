"""What `report --photos` and `--videos` left in the results folder, read for the gallery (files only).

photos/manifest.json: the photo row, its reconstruction and each domain's rendering of the same codes;
videos/manifest.json: each domain's morph video; morphs/manifest.json: each light-mode winner's offsets
scaled from the source to the domain (written by `run` and `report`). Manifests are untrusted input like every file here: entries
of the wrong type are skipped and every file must exist inside its folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nada_sweep.report.results import contained
from nada_sweep.run_files import SweepFolder, read_json


@dataclass
class PhotoRow:
    title: str
    file: Path  # resolved, inside photos/
    name: str  # file name inside photos/
    trial: str | None = None  # the trial that rendered it (domain rows)
    facts: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class PhotoSection:
    names: list[str]  # the photos' names, in row order
    rows: list[PhotoRow]  # photos, reconstruction, then one per domain


@dataclass
class Video:
    domain: str
    trial: str | None
    file: Path
    name: str


def _manifest(root: Path, folder: str, warnings: list[str]) -> tuple[Path, dict[str, Any]] | None:
    base = contained(root / folder, root)
    path = contained(root / folder / SweepFolder.MANIFEST, root) if base else None
    if base is None or path is None:
        return None
    try:
        data = read_json(path)
    except (OSError, ValueError) as error:
        warnings.append(f"{path}: unreadable ({error}); its section is left out")
        return None
    return (base, data) if isinstance(data, dict) else None


def _file(base: Path, name: Any) -> Path | None:
    return contained(base / name, base) if isinstance(name, str) and "/" not in name else None


def _entries(data: dict[str, Any]) -> list[dict[str, Any]]:
    entries = data.get("domains")
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("domain"), str)] if isinstance(
        entries, list) else []


def _trial_of(entry: dict[str, Any]) -> str | None:
    """The trial a manifest entry was made from (None when it does not say)."""
    return str(entry.get("trial") or "") or None


def read_photos(root: Path, warnings: list[str]) -> PhotoSection | None:
    found = _manifest(root, SweepFolder.PHOTOS, warnings)
    if found is None:
        return None
    base, data = found
    mse = [v for v in data.get("mse", []) if isinstance(v, (int, float))] if isinstance(data.get("mse"), list) else []
    facts = {
        "photos": [("inverted with", data.get("inverted_with")), ("perceptual term", data.get("perceptual"))],
        "reconstruction": [("rendered by", data.get("source_generator")),
                           ("mean mse", f"{sum(mse) / len(mse):.4f}" if mse else None)],
    }
    rows = []
    for title, key in (("your photos", "photos"), ("reconstruction", "reconstruction")):
        file = _file(base, data.get(key))
        if file is not None:
            rows.append(PhotoRow(title, file, file.name, None, [(k, str(v)) for k, v in facts[key] if v]))
    for entry in _entries(data):
        file = _file(base, entry.get("image"))
        if file is not None:
            rows.append(PhotoRow(entry["domain"], file, file.name, _trial_of(entry)))
    names = [str(n) for n in data.get("names", [])] if isinstance(data.get("names"), list) else []
    return PhotoSection(names, rows)


def read_videos(root: Path, warnings: list[str]) -> dict[str, Video]:
    found = _manifest(root, SweepFolder.VIDEOS, warnings)
    if found is None:
        return {}
    base, data = found
    videos = {}
    for entry in _entries(data):
        file = _file(base, entry.get("file"))
        if file is not None:
            videos[entry["domain"]] = Video(entry["domain"], _trial_of(entry), file, file.name)
    return videos


@dataclass
class Morph:
    domain: str
    trial: str | None
    file: Path
    name: str
    steps: list[float]  # the offset scale of each column


def read_morphs(root: Path, warnings: list[str]) -> dict[str, Morph]:
    found = _manifest(root, SweepFolder.MORPHS, warnings)
    if found is None:
        return {}
    base, data = found
    morphs = {}
    for entry in _entries(data):
        file = _file(base, entry.get("image"))
        steps = entry.get("steps")
        if file is not None:
            numbers = [float(t) for t in steps if isinstance(t, (int, float))] if isinstance(steps, list) else []
            morphs[entry["domain"]] = Morph(entry["domain"], _trial_of(entry), file, file.name, numbers)
    return morphs
