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
from nada_sweep.paths import kind_problem, shown

# Values that aliases (*name) may add to a document beyond those written out. Real sweep files and catalogs
# alias a few settings blocks; nested aliases ("billion laughs") expand exponentially, and every value
# would get its line recorded, its type checked and its trial built.
MAX_ALIASED_VALUES = 100_000


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
    """Parse `path`; syntax errors, duplicate keys, refused characters, alias bombs and unreadable files become
    UserError with the line."""
    problem = kind_problem(path, "file", f"{what} file")
    if problem:
        raise UserError(problem)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{shown(path)}: cannot read the {what} file: {error}") from None
    loader = None
    try:
        loader = _Loader(text)  # the reader refuses control characters here, before any parsing
        node = loader.get_single_node()
        doc = YamlDoc(path, None)
        if node is not None:
            _refuse_alias_bombs(doc, node)
            _record_lines(doc, node, (), set())
            doc.data = loader.construct_document(node)
        return doc
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        character = chr(error.character) if isinstance(error.character, int) else error.character
        raise UserError(f"{shown(path)}:{line}: YAML does not allow the character {character!r} (a control "
                        "character; in a quoted string write it as an escape such as \\x01, or remove it)") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{shown(path)}:{mark.line + 1}" if mark else shown(path)
        detail = error.problem or error.context or "cannot parse"
        if error.context and error.problem:
            started = f" on line {error.context_mark.line + 1}" if error.context_mark else ""
            detail += f" ({error.context}{started})"
        raise UserError(f"{where}: YAML syntax error: {detail}") from None
    except yaml.YAMLError as error:
        raise UserError(f"{shown(path)}: YAML syntax error: {error}") from None
    except RecursionError:
        raise UserError(f"{shown(path)}: nested too deeply to read (lists or mappings hundreds of levels deep)"
                        ) from None
    finally:
        if loader is not None:
            loader.dispose()


def _refuse_alias_bombs(doc: YamlDoc, root: yaml.Node) -> None:
    """A UserError when aliases would expand the document by more than MAX_ALIASED_VALUES values.

    Counts without expanding: each node's expanded size is computed once (a recursive alias counts once).
    """
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, active: set[int]) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in active:
            return 0
        active.add(id(node))
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(key, active) + size(value, active) for key, value in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(item, active) for item in node.value)
        else:
            total = 1
        active.discard(id(node))
        sizes[id(node)] = total
        return total

    expanded = size(root, set())
    if expanded - len(sizes) <= MAX_ALIASED_VALUES:
        return
    where, label = shown(doc.path), ""
    if isinstance(root, yaml.MappingNode) and root.value:  # name the top-level entry that grows the most
        key, value = max(root.value, key=lambda item: sizes.get(id(item[1]), 0))
        where, label = f"{where}:{key.start_mark.line + 1}", f"{shown(str(key.value))}: "
    raise UserError(f"{where}: {label}YAML aliases (*name) expand this document from {len(sizes):,} written values "
                    f"to {expanded:,}; more than {MAX_ALIASED_VALUES:,} added values is refused as an alias bomb "
                    "(\"billion laughs\"): write the values out or alias less deeply")


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
