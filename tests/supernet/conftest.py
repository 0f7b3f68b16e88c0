"""Fixtures for the supernet tests: deterministic weights and cached supernets."""
from __future__ import annotations

import copy

import pytest

from supernet import Supernet
from supernet_testutil import make_filled_supernet

_CACHE: dict = {}



@pytest.fixture
def filled_supernet():
    """``filled_supernet(space)`` -> a deterministic eval-mode supernet. Building and filling
    the ImageNet spaces takes a while, so one copy per space is kept and handed out as a deep
    copy: a test may change its network freely."""
    def get(space: str) -> Supernet:
        if space not in _CACHE:
            _CACHE[space] = make_filled_supernet(space)
        return copy.deepcopy(_CACHE[space])

    return get
