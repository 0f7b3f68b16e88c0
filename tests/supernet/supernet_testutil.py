"""Helpers shared by the supernet tests (a unique module name: test folders share sys.path)."""
from __future__ import annotations

import zlib

import numpy as np
import torch

from supernet import Supernet


def fill_value(key: str, shape) -> np.ndarray:
    """Deterministic stand-in for trained weights, a function of a state_dict key and shape.

    Must stay identical to ``fill`` in ``tests/data/make_reference_fixture.py`` (the fixture's
    ``fill_checksum`` proves it). Scales keep activations O(1) through the whole network, and
    BN running statistics are not the identity, so a wrong slice of any tensor shows.
    """
    shape = tuple(int(s) for s in shape)
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, dtype=np.int64)
    z = np.random.default_rng(zlib.crc32(key.encode("utf-8"))).standard_normal(shape)
    if key.endswith("_matrix"):
        return np.eye(shape[0]) + 0.05 * z
    if key.endswith("running_var"):
        return np.abs(z) + 0.5
    if key.endswith("running_mean") or key.endswith("bias"):
        return 0.05 * z
    if len(shape) == 1:
        return 1.0 + 0.1 * z
    return z * np.sqrt(1.5 / int(np.prod(shape[1:])))


def filled_state(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        a = fill_value(k, v.shape)
        out[k] = torch.from_numpy(a) if a.dtype == np.int64 else torch.from_numpy(a.astype(np.float32))
    return out


def make_filled_supernet(space: str) -> Supernet:
    net = Supernet(space)
    net.load_state_dict(filled_state(net.state_dict()))
    return net.eval()
