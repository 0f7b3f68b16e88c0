"""Fixtures of the ofa_deploy tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A random tiny supernet, a MACs-proportional LUT and a random predictor on disk, for
    fast end-to-end runs of ``specialize`` and ``export``."""
    import torch

    from luts.table import LatencyTable
    from ofa_deploy.accuracy import AccuracyPredictor, ArchEncoder
    from profilers.base import LatencyStats
    from supernet import Supernet, enumerate_ops, get_space
    from supernet.checkpoint import save_supernet

    d = tmp_path_factory.mktemp("assets")
    sp = get_space("ofa-mbv3-tiny")
    torch.manual_seed(0)  # test-local weights only; the code under test takes explicit seeds
    save_supernet(Supernet(sp), d / "net.pt")
    res = (32, 40)
    t = LatencyTable(sp, res, meta={"device": "ort:cpu", "threads": 1})
    for op in enumerate_ops(sp, res):
        v = op.macs / 2e7 + 0.01
        t.add(op, LatencyStats(v, v * 0.9, v * 1.1, 0.0, 5))
    t.save(d / "lut.json")
    AccuracyPredictor(ArchEncoder.for_space(sp), (16,), space=sp, seed=1).save(d / "pred.pt")
    return d
