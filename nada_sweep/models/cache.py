"""One bounded, thread-safe cache of loaded models per process, for generator files and CLIP models alike.

A Ray worker runs trial after trial; keeping the last few models it loaded saves reading them again, and the
bound keeps a worker that meets many different files from holding all of them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


def file_identity(path: Path) -> tuple[str, int, int]:
    """A file as caches see it: resolved path, mtime and size (a rewritten file is another model)."""
    resolved = path.resolve(strict=True)
    stat = resolved.stat()
    return str(resolved), stat.st_mtime_ns, stat.st_size


class ModelCache(Generic[T]):
    """Least-recently-used cache holding at most `entries` values."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._values: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The cached value of `key`, else `load()` (run outside the lock: loads may be slow), then kept."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = load()
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.entries:
                self._values.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
