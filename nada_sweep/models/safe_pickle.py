"""A pickle reader for weight files that never runs code from the file.

Python's pickle calls whatever callable a file names; NVIDIA's network pickles go further and carry the source
of their classes, which torch_utils.persistence executes while loading. This reader hands pickle only a short
list of constructors that build data (tensors, numpy arrays and scalars, OrderedDict, sets) and reads NVIDIA's
persistence records as `PersistentRecord`s: the class name, the embedded source as a string (never executed)
and the object's attributes. Every other name the file references becomes an inert stand-in that only stores
its arguments, so a file can be read to the end and inspected (which family of network it is) before it is
refused; `SafeLoad.foreign` lists those names.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nada_sweep.models.weights_file import PICKLE_PROTOCOL, describe_start


class AttrDict(dict):
    """Stand-in for dnnlib's EasyDict (a dict with attribute access): read as a plain dict."""


@dataclass
class PersistentRecord:
    """One object saved by NVIDIA's torch_utils.persistence: read as data, its source never imported."""

    class_name: str
    module_src: str
    state: dict[str, Any]  # the object's __dict__: attributes, "_parameters", "_buffers", "_modules"

    @property
    def children(self) -> dict[str, Any]:
        return dict(self.state.get("_modules") or {})

    def tensors(self) -> dict[str, Any]:
        """Parameters and buffers by name (a None entry is an absent optional tensor, e.g. bias=False)."""
        return {**(self.state.get("_parameters") or {}), **(self.state.get("_buffers") or {})}


class _Inert:
    """What a name outside the allow-list turns into: a class whose instances only remember their inputs."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        # pickle's NEWOBJ calls __new__ alone, REDUCE the class: both end here
        self = super().__new__(cls)
        self.args, self.kwargs, self.state, self.items = args, kwargs, None, []
        return self

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: Any) -> None:
        self.items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))


def _persistent_record(meta: dict) -> PersistentRecord:
    if not isinstance(meta, dict):
        raise pickle.UnpicklingError(f"persistence record holds {type(meta).__name__}, not a dict")
    state = meta.get("state")
    return PersistentRecord(
        class_name=str(meta.get("class_name", "")),
        module_src=str(meta.get("module_src", "")),
        state=dict(state) if isinstance(state, dict) else {},
    )


def _storage_from_bytes(data: bytes) -> Any:
    # plain pickle.dump writes each tensor storage as a nested torch.save archive; read it as weights only
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _allowed() -> dict[tuple[str, str], Any]:
    import numpy as np

    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
        ("dnnlib.util", "EasyDict"): AttrDict,
        ("dnnlib", "EasyDict"): AttrDict,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    # numpy 2 renamed numpy.core to numpy._core and files carry either name; the functions are taken from
    # numpy's own reduce output, which names the current ones without touching the deprecated alias
    for core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(core, "scalar")] = np.float64(0).__reduce__()[0]
        table[(core, "_reconstruct")] = np.zeros(0).__reduce__()[0]
    return table


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any):
        super().__init__(file)
        self.allowed = _allowed()
        self.foreign: list[str] = []

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        reference = f"{module}.{name}"
        if reference not in self.foreign:
            self.foreign.append(reference)
        return type(name, (_Inert,), {"__module__": __name__})

    def persistent_load(self, pid: Any) -> Any:
        # torch.save archives use persistent ids; NVIDIA's network pickles never do
        raise pickle.UnpicklingError("persistent id found: this is a torch.save file, not a plain pickle")


@dataclass
class SafeLoad:
    value: Any
    foreign: list[str] = field(default_factory=list)  # names outside the allow-list, in order of appearance


class PickleReadError(Exception):
    """The file could not be read to its end; `foreign` holds the names outside the allow-list met before."""

    def __init__(self, reason: str, foreign: list[str], not_a_pickle: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.foreign = foreign
        self.not_a_pickle = not_a_pickle  # its first bytes are no pickle's (a text file, an image, ...)


def load(path: Path) -> SafeLoad:
    """Read the pickle at `path` as data; a damaged or foreign file raises PickleReadError (OSError passes)."""
    with open(path, "rb") as file:
        head = file.read(64)
        if head and head[0] != PICKLE_PROTOCOL:
            raise PickleReadError(f"it starts with {describe_start(head)}", [], not_a_pickle=True)
        file.seek(0)
        unpickler = _Unpickler(file)
        try:
            value = unpickler.load()
        except OSError:
            raise
        except Exception as exc:  # a damaged stream raises anything from EOFError to TypeError
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise PickleReadError(reason, unpickler.foreign) from None
    return SafeLoad(value=value, foreign=unpickler.foreign)


def walk(value: Any) -> Iterator[Any]:
    """Every container, record and stand-in reachable from `value` (each once), tensors excluded."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, (torch.Tensor, str, bytes, int, float)):
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, PersistentRecord):
            stack.append(item.state)
        elif isinstance(item, _Inert):
            stack.extend([item.args, item.kwargs, item.state, item.items])
