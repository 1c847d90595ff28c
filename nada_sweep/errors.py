"""The one exception type that the CLI turns into a clean message and exit code 2."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pydantic


class UserError(Exception):
    """Bad input from the user: a file, field or value that cannot be used.

    The message must name the offending file/field/value; the CLI prints it without a traceback.
    """


def describe_validation_error(error: pydantic.ValidationError, where: str) -> UserError:
    """One readable message for every problem pydantic found, each naming field and value.

    `where` names the origin of the data (a file path, or "command line").
    """
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown field"
        value = problem.get("input")
        shown = "" if isinstance(value, dict) or problem["type"] == "missing" else f" (got {value!r})"
        lines.append(f"{where}: {field}: {message}{shown}")
    return UserError("\n".join(lines))
