"""Reading a torch.save file as data (torch.load with weights_only=True), refused in one line when it is not.

Every file nada-sweep reads with torch.load goes through `load_weights`: generators, CLIP state dicts, latents,
domain and mapper files. torch's own refusals run to several paragraphs (and a text file given as a generator
ends in errors such as "pop from empty list"); WeightsFileError says in one phrase what the file is instead:
not a PyTorch file at all, a pickle that would run code, or a damaged archive.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's archive format (and TorchScript's)
PICKLE_PROTOCOL = 0x80  # the first byte of a pickle of protocol 2 or later: torch.save's legacy format


class WeightsFileError(Exception):
    """Why a file cannot be read as weights, one phrase to follow `path: `; `needs_code` when it was refused
    because loading it would run code (the caller may add how to re-save it)."""

    def __init__(self, reason: str, needs_code: bool = False):
        super().__init__(reason)
        self.needs_code = needs_code


def load_weights(path: Path, safe_globals: Sequence[Any] = ()) -> Any:
    """torch.load(path, weights_only=True) on the CPU; `safe_globals`: extra plain-data classes it may build.

    OSError from opening it (missing, no permission) passes; everything else that fails is a WeightsFileError.
    """
    with open(path, "rb") as file:
        head = file.read(64)
        if not head:
            raise WeightsFileError("the file is empty")
        if not head.startswith(_ZIP_MAGIC) and head[0] != PICKLE_PROTOCOL:
            raise WeightsFileError(f"not a PyTorch checkpoint, or corrupt (it starts with {describe_start(head)}, not "
                                   "a torch.save archive)")
        file.seek(0)
        try:
            with torch.serialization.safe_globals(list(safe_globals)):
                return torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            needs_code = re.search(r"GLOBAL ([\w.]+)", str(exc))
            if needs_code:
                raise WeightsFileError(
                    f"refused: unpickling it needs arbitrary code execution (it references {needs_code.group(1)}), "
                    "which torch.load(weights_only=True) does not allow", needs_code=True) from None
            reason = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", str(exc), re.S)
            raise WeightsFileError(f"not a PyTorch checkpoint, or corrupt (unpickling failed: "
                                   f"{reason.group(1) if reason else first_sentence(exc)})") from None
        except Exception as exc:  # damaged archives surface as RuntimeError, OSError(EINVAL), EOFError, ...
            raise WeightsFileError(f"not a readable PyTorch checkpoint (truncated or corrupt?): "
                                   f"{first_sentence(exc)}") from None


def first_sentence(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch's go on for paragraphs), else its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(exc).__name__


def describe_start(head: bytes) -> str:
    """What the first bytes of a file look like, for a message: "the text 'hello'" or "the bytes 1f 8b ..."."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:  # a character cut by the 64-byte read still leaves text before it
        text = head[:error.start].decode("utf-8") if error.start >= len(head) - 4 else ""
    if text and all(char.isprintable() or char in "\t\r\n" for char in text):
        shown = " ".join(text.split())[:40]
        return f"the text {shown!r}" if shown else "blank text"
    return "the bytes " + head[:8].hex(" ")
