"""Paths a user gives (the sweep file, a catalog, a generator, a style-image folder, a results folder): made
absolute and checked for what they must be, before anything reads or writes them.

Each problem is one phrase for the caller to place (`file:line: field: ...`): not found, a folder where a file
belongs (or the reverse), a symlink loop, a name the file system refuses, a folder that cannot be created or
written. Nothing here creates anything.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Literal

from nada_sweep.errors import shortened

Kind = Literal["file", "folder"]


class PathProblem(ValueError):
    """Why a path cannot be used, worded to follow `where: field: `."""


def shown(path: Path | str) -> str:
    """A path as a message shows it (a 50 MB path is cut)."""
    return shortened(str(path))


def user_path(value: str | Path, anchor_file: Path | None = None) -> Path:
    """`value` as an absolute path: `~` expanded, relative to the folder of `anchor_file`, symlinks followed.

    A symlink loop raises PathProblem (Python 3.11 raises RuntimeError there, later versions OSError).
    """
    path = Path(os.path.expanduser(value))
    if not path.is_absolute() and anchor_file is not None:
        path = anchor_file.parent / path
    try:
        return path.resolve()
    except RuntimeError:
        raise PathProblem(f"symlink loop: {shown(path)} leads back to itself") from None
    except OSError as error:
        raise PathProblem(_os_problem(path, error)) from None


def kind_problem(path: Path, kind: Kind, what: str | None = None) -> str | None:
    """Why `path` is not an existing `kind` ("file" or "folder") that can be read, or None.

    `what` names it in the message ("catalog file"; default: the kind).
    """
    what = what or kind
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return f"{what} not found: {shown(path)}"
    except OSError as error:
        return _os_problem(path, error)
    if kind == "file" and stat.S_ISDIR(mode):
        return f"{shown(path)} is a folder, expected a {what}"
    if kind == "folder" and not stat.S_ISDIR(mode):
        return f"{shown(path)} is a file, expected a {what}"
    if not os.access(path, os.R_OK if kind == "file" else os.R_OK | os.X_OK):
        return f"no permission to read {shown(path)}"
    return None


def output_folder_problem(path: Path) -> str | None:
    """Why `path` cannot be used as a folder to write into (creating it and its parents as needed), or None.

    Creates nothing: the nearest existing ancestor must be a folder this process may write into.
    """
    existing = path
    while True:
        try:
            mode = existing.stat().st_mode
            break
        except (FileNotFoundError, NotADirectoryError):
            if existing.parent == existing:
                return f"cannot create {shown(path)}: no part of it exists"
            existing = existing.parent
        except OSError as error:
            return _os_problem(existing, error)
    if not stat.S_ISDIR(mode):
        if existing == path:
            return f"{shown(path)} is a file, expected a folder"
        return f"cannot create the folder {shown(path)}: {shown(existing)} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == path:
            return f"no permission to write into {shown(path)}"
        return f"cannot create the folder {shown(path)}: no permission to write into {shown(existing)}"
    return None


def _os_problem(path: Path, error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return f"symlink loop: {shown(path)} leads back to itself"
    if error.errno == errno.ENAMETOOLONG:
        return f"the path is too long for the file system ({len(str(path))} characters): {shown(path)}"
    return f"cannot use {shown(path)}: {error.strerror or error}"
