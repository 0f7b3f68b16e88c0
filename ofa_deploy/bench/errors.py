"""The one error type of ``bench``: bad artifacts, devices or baseline, reported in one line."""
from __future__ import annotations

from supernet.errors import OfaDeployError

__all__ = ["BenchError"]


class BenchError(OfaDeployError, ValueError):
    """Bad artifacts, devices or baseline given to ``bench``."""
