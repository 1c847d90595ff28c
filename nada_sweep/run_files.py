"""The files of one run folder, shared by the trainer (writer) and the report (reader).

Everything readers depend on is written atomically (temporary file + rename), so a crash or a kill never
leaves half a file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIG = "config.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
STATE = "state.pt"
GENERATOR = "generator.pt"
MAPPER = "mapper.pt"  # beside the generator it was trained on
SAMPLES = "samples"
SOURCE_SAMPLES = "source.png"
MAPPER_SAMPLES = "mapper.png"
MAPPER_METRICS = "mapper_metrics.json"

FINISHED = "ok"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` and rename the result onto `path` only once it is complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


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
        path = self.path(STATUS)
        return read_json(path) if path.exists() else None

    def is_finished(self) -> bool:
        status = self.status()
        return status is not None and status.get("status") == FINISHED

    def write_status(self, **fields: Any) -> None:
        write_json(self.path(STATUS), fields)

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

    def write_history(self, history: list[dict[str, Any]]) -> None:
        # Rewritten whole (it is small) so that a resumed run never holds lines past its checkpoint.
        text = "".join(json.dumps(entry) + "\n" for entry in history)
        atomic_write(self.path(METRICS), lambda tmp: tmp.write_text(text))
