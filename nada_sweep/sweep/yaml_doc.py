"""YAML read safely, with the line of every key and list item, so that errors can name file and line.

`load_yaml` turns every reading problem into one UserError with the line; `problems_in(doc)` collects
located problems worded as nada_sweep.errors words them, with `file:line` as the place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nada_sweep.errors import Loc, Problems, UserError, field_name


class _Loader(yaml.SafeLoader):
    """Safe YAML that also reads 2e-3 as a number (YAML 1.1 demands a dot: 2.0e-3) -- a classic lr typo."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass
class YamlDoc:
    """A parsed YAML file and the line of every key and list item, by path."""

    path: Path
    data: Any
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict)

    def line(self, loc: Iterable[Any]) -> int | None:
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return None


def load_yaml(path: Path, what: str) -> YamlDoc:
    """Parse `path`; syntax errors, duplicate keys and unreadable files become UserError with the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a {what} YAML file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read the {what} file: {error}") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        doc = YamlDoc(path, None)
        if node is not None:
            _record_lines(doc, node, (), set())
            doc.data = loader.construct_document(node)
        return doc
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        detail = error.problem or error.context or "cannot parse"
        if error.context and error.problem:
            started = f" on line {error.context_mark.line + 1}" if error.context_mark else ""
            detail += f" ({error.context}{started})"
        raise UserError(f"{where}: YAML syntax error: {detail}") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path}: YAML syntax error: {error}") from None
    finally:
        loader.dispose()


def _record_lines(doc: YamlDoc, node: yaml.Node, loc: tuple[Any, ...], active: set[int]) -> None:
    if id(node) in active:  # a recursive alias; its lines are already known
        return
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in seen:
                raise UserError(f"{doc.path}:{line}: {field_name((*loc, key))}: duplicate key "
                                f"(first given on line {seen[key]})")
            seen[key] = line
            doc.lines[(*loc, key)] = line
            _record_lines(doc, value_node, (*loc, key), active)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            doc.lines[(*loc, index)] = item.start_mark.line + 1
            _record_lines(doc, item, (*loc, index), active)
    active.discard(id(node))


def problems_in(doc: YamlDoc) -> Problems:
    """A problem collector whose places are `file:line` of `doc` and whose labels name the domain concerned."""

    def where(loc: Loc) -> str:
        line = doc.line(loc)
        return f"{doc.path}:{line}" if line else str(doc.path)

    def label(loc: Loc) -> str:
        text = field_name(loc)
        if len(loc) >= 2 and loc[0] == "domains" and isinstance(loc[1], int):
            domains = doc.data.get("domains") if isinstance(doc.data, dict) else None
            if isinstance(domains, list) and loc[1] < len(domains) and isinstance(domains[loc[1]], dict):
                name = domains[loc[1]].get("name")
                if isinstance(name, str):
                    text += f" (domain {name!r})"
        return text

    return Problems(where, label)
