"""One base class for every error a user can cause: the CLI turns these into one clear line.

``exit_code`` says which kind it is, the same in every command: 2 when a value the user gave
(a flag, a ``--config`` key) is malformed, as for click's own usage errors; 1 for everything
that goes wrong while running (a missing table, a corrupt file, a failed export).
"""

__all__ = ["OfaDeployError", "BadValueError"]


class OfaDeployError(Exception):
    """Base of user-facing errors (bad arch, bad checkpoint, unknown space, missing LUT...)."""

    exit_code = 1


class BadValueError(OfaDeployError, ValueError):
    """A value given on the command line is malformed (exit 2, like click's usage errors)."""

    exit_code = 2
