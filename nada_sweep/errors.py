"""The one exception type that the CLI turns into a clean message and exit code 2, and the one way a located
problem is worded: `where: field: what is wrong (got value)`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pydantic

Loc = tuple[Any, ...]
NO_VALUE = object()  # "no value to quote" (None is a value users can give)
MAX_QUOTED = 200  # characters of a value a message quotes; a 50 MB string must not be echoed whole


class UserError(Exception):
    """Bad input from the user: a file, field or value that cannot be used.

    The message must name the offending file/field/value; the CLI prints it without a traceback.
    """


def field_name(loc: Iterable[Any]) -> str:
    """`domains[3].target` from ("domains", 3, "target")."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def quoted(value: Any) -> str:
    """`value` as a message shows it: its repr, cut to MAX_QUOTED characters."""
    return shortened(repr(value))


def shortened(text: str) -> str:
    """`text` (a path, a name a user gave) cut to MAX_QUOTED characters for a message."""
    return text if len(text) <= MAX_QUOTED else f"{text[:MAX_QUOTED]}... ({len(text)} characters)"


def did_you_mean(word: Any, choices: Sequence[str]) -> str:
    """'; did you mean X?' for the closest choice, else the list of valid choices."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f" (valid: {', '.join(choices)})"


@dataclass
class Problems:
    """Located problems of one input, collected so that all of them are reported at once.

    `where(loc)` names the place of a field (a file and line, or "command line"); `label(loc)` its name.
    """

    where: Callable[[Loc], str]
    label: Callable[[Loc], str] = field_name
    messages: list[str] = field(default_factory=list)

    def add(self, loc: Loc, message: str, value: Any = NO_VALUE) -> None:
        shown = "" if value is NO_VALUE or isinstance(value, (dict, list)) else f" (got {quoted(value)})"
        self.messages.append(f"{self.where(loc)}: {self.label(loc)}: {message}{shown}")

    def add_validation_error(
        self,
        error: pydantic.ValidationError,
        prefix: Loc = (),
        valid_keys: Callable[[Loc], list[str]] | None = None,
    ) -> None:
        """Every problem pydantic found; `valid_keys(loc)` lists the keys allowed at loc, for typo hints."""
        for problem in error.errors():
            loc = (*prefix, *problem["loc"])
            if problem["type"] == "extra_forbidden":
                valid = valid_keys(problem["loc"][:-1]) if valid_keys else []
                self.add(loc, "unknown key" + (did_you_mean(problem["loc"][-1], valid) if valid else ""))
            elif problem["type"] == "missing":
                self.add(loc, "required, but missing")
            else:
                self.add(loc, problem["msg"].removeprefix("Value error, "), problem.get("input", NO_VALUE))

    def raise_if_any(self) -> None:
        if self.messages:
            raise UserError("\n".join(self.messages))


def describe_validation_error(error: pydantic.ValidationError, where: str) -> UserError:
    """One readable message for every problem pydantic found, each naming field and value.

    `where` names the origin of the data (a file path, or "command line").
    """
    problems = Problems(lambda loc: where)
    problems.add_validation_error(error)
    return UserError("\n".join(problems.messages))
