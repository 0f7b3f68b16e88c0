"""One base class for every error a user can cause: the CLI turns these into one clear line.

``exit_code`` says which kind it is, the same in every command: 2 when a value the user gave
(a flag, a ``--config`` key) is malformed, as for click's own usage errors; 1 for everything
that goes wrong while running (a missing table, a corrupt file, a failed export).
"""

__all__ = ["OfaDeployError", "BadValueError", "first_line"]


class OfaDeployError(Exception):
    """Base of user-facing errors (bad arch, bad checkpoint, unknown space, missing LUT...)."""

    exit_code = 1


class BadValueError(OfaDeployError, ValueError):
    """A value given on the command line is malformed (exit 2, like click's usage errors)."""

    exit_code = 2


def first_line(exc_or_text: "BaseException | str", limit: int = 300, *,
               with_type: bool = False) -> str:
    """The first non-empty line of an exception's message (or of a text), cut to ``limit``
    characters with ``...``: third-party errors (protobuf, YAML, runtimes) often span many
    lines, and a user-facing error is one line.

    An exception with an empty message gives its type name. ``with_type`` prefixes the type
    name (``ValueError: ...``) to exceptions that are not :class:`OfaDeployError`, whose
    message alone may not say what went wrong."""
    text = str(exc_or_text).strip()
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if isinstance(exc_or_text, BaseException):
        name = type(exc_or_text).__name__
        if not first:
            first = name
        elif with_type and not isinstance(exc_or_text, OfaDeployError):
            first = f"{name}: {first}"
    if limit > 3 and len(first) > limit:
        first = first[: limit - 3] + "..."
    return first
