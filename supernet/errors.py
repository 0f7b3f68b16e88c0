"""One base class for every error a user can cause: the CLI turns these into one clear line."""

__all__ = ["OfaDeployError"]


class OfaDeployError(Exception):
    """Base of user-facing errors (bad arch, bad checkpoint, unknown space, missing LUT...)."""
