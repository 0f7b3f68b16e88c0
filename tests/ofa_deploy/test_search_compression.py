"""Exact compression of MLP predictors over the search domain (dead units dropped, linear ones
folded): bounds are exact / sound, outputs unchanged, fallback to the plain predictor."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from luts.store import load_table
from ofa_deploy.accuracy import (AccuracyPredictor, ArchEncoder, bundled_predictor_path,
                                 load_predictor)
from ofa_deploy.search import Constraints, EvolutionConfig, evolution_search
from ofa_deploy.search.predictor_compression import (OneHotDomain, compress_mlp,
                                                     compress_predictor, encoder_domain,
                                                     layer_bounds, random_features,
                                                     search_scorer)
from ofa_deploy.search.problem import _Problem

W12 = "ofa-mbv3-w1.2"
SMALL = EvolutionConfig(population=24, generations=10, seed=0, islands=2)


@pytest.fixture(scope="module")
def note10():
    return load_table("note10", space=W12)


def _all_points(domain: OneHotDomain) -> np.ndarray:
    """Every feature row of a tiny domain, by enumeration."""
    parts = [[[c] for c in g] for g in domain.fixed_groups]
    for blocks, depths in domain.stages:
        opts = []
        for d in depths:
            for pick in itertools.product(*[itertools.product(*groups) for groups in blocks[:d]]):
                opts.append([c for blk in pick for c in blk])
        parts.append(opts)
    rows = []
    for combo in itertools.product(*parts):
        x = np.zeros(domain.dim, np.float32)
        x[[c for part in combo for c in part]] = 1.0
        rows.append(x)
    return np.stack(rows)


TINY = OneHotDomain(
    dim=13, fixed_groups=((11, 12),),
    stages=(((((0, 1), (2, 3)), ((4, 5), (6, 7))), (1, 2)),  # 2 blocks of 2 groups, depth 1-2
            ((((8, 9, 10),),), (0, 1))))  # 1 block of 1 group, depth 0-1


def test_linear_bounds_are_exact_on_an_enumerated_domain():
    pts = _all_points(TINY)
    assert len(pts) == 2 * (4 + 16) * (1 + 3)
    c = np.random.default_rng(0).normal(size=(50, TINY.dim))
    z = pts @ c.T
    assert np.allclose(TINY.linear_max(c), z.max(axis=0))
    assert np.allclose(TINY.linear_min(c), z.min(axis=0))
    ext = TINY.extremes(c)  # each row reaches its bound, and is a point of the domain
    assert np.allclose(np.einsum("ij,ij->i", ext[50:], c), z.max(axis=0))
    assert np.allclose(np.einsum("ij,ij->i", ext[:50], c), z.min(axis=0))
    assert {x.tobytes() for x in ext} <= {x.tobytes() for x in pts}
    rnd = random_features(TINY, 500, np.random.default_rng(1))
    assert {x.tobytes() for x in rnd} <= {x.tobytes() for x in pts}


def _constructed_mlp(rng, dim, hidden=(12, 10), linear=(8, 3)):
    """Random ReLU MLP with, by construction, a dead unit and ``linear[k]`` linear units in
    hidden layer ``k``: an all-negative row with a negative bias never fires, an all-positive
    row with a positive bias never goes below 0 (the inputs are 0/1, then ReLU outputs)."""
    layers, prev = [], dim
    for h, n_lin in zip(hidden, linear):
        w = rng.normal(size=(h, prev)).astype(np.float32)
        b = rng.normal(size=h).astype(np.float32)
        w[0], b[0] = -np.abs(w[0]), -0.5  # dead
        w[1:1 + n_lin] = np.abs(w[1:1 + n_lin])  # linear
        b[1:1 + n_lin] = 0.2
        layers.append((w, b))
        prev = h
    layers.append((rng.normal(size=(1, prev)).astype(np.float32), np.float32([0.1])))
    return layers


def _plain_forward(layers, x):
    h = x.astype(np.float64)
    for w, b in layers[:-1]:
        h = np.maximum(h @ w.T.astype(np.float64) + b, 0)
    w, b = layers[-1]
    return (h @ w.T.astype(np.float64)).ravel() + b[0]


def test_compression_of_a_constructed_mlp_is_exact_and_smaller():
    layers = _constructed_mlp(np.random.default_rng(3), TINY.dim)
    comp = compress_mlp(layers, TINY, scale=2.0, offset=0.5)
    for r, n_lin in zip(comp.report, (8, 3)):
        assert r["dead"] >= 1 and r["linear"] >= n_lin and r["folded"] == r["linear"]
        assert r["kept"] + r["dead"] + r["folded"] == r["units"]
    # few linear units with a wide next layer: cheaper to keep than to fold
    few = compress_mlp(_constructed_mlp(np.random.default_rng(3), TINY.dim, linear=(2, 3)), TINY)
    assert few.report[0]["linear"] >= 2 and few.report[0]["folded"] == 0
    pts = _all_points(TINY)
    assert np.abs(comp.predict_features(pts) - (_plain_forward(layers, pts) * 2.0 + 0.5)
                  ).max() < 1e-4
    assert comp.flops_per_row < sum(w.size for w, _ in layers)
    # the proved bounds hold on every point, and the first layer's are attained
    bounds = layer_bounds(layers, TINY)
    h = pts.astype(np.float64)
    for k, (lo, hi) in enumerate(bounds):
        w, b = layers[k]
        z = h @ w.T.astype(np.float64) + b
        assert (z >= lo - 1e-9).all() and (z <= hi + 1e-9).all()
        if k == 0:
            assert np.allclose(z.min(axis=0), lo) and np.allclose(z.max(axis=0), hi)
        h = np.maximum(z, 0)


def _constructed_predictor(seed=7):
    """A reference-layout predictor whose layers have provably dead and linear units."""
    enc = ArchEncoder.reference()
    layers = _constructed_mlp(np.random.default_rng(seed), enc.dim, hidden=(24, 16),
                              linear=(16, 5))
    return AccuracyPredictor(enc, hidden=(24, 16), space=W12, weights=layers,
                             target_mean=0.7, target_std=0.01)


def test_search_scores_with_the_compressed_predictor_and_gets_the_same_values(note10):
    pred = _constructed_predictor()
    prob = _Problem(W12, pred, Constraints(max_latency_ms=30), note10, None)
    comp = compress_predictor(pred, prob.cost)
    assert comp is not None and [r["dead"] >= 1 and r["folded"] >= n
                                 for r, n in zip(comp.report, (16, 5))] == [True, True]
    assert prob._fast[2] != pred.predict_features  # the search scores with a compressed one
    g = prob.sample_feasible(3000, np.random.default_rng(0))
    assert np.abs(prob.score(g) - pred.predict(prob.cost.batch(g))).max() < 1e-5  # float32
    # per seed deterministic, and the search with it meets the budget
    a = evolution_search(W12, pred, Constraints(max_latency_ms=30), SMALL, latency_table=note10)
    b = evolution_search(W12, pred, Constraints(max_latency_ms=30), SMALL, latency_table=note10)
    assert a.arch == b.arch and a.predicted_accuracy == b.predicted_accuracy
    assert a.latency_ms <= 30
    assert a.predicted_accuracy == pytest.approx(pred.predict_one(a.arch), abs=1e-5)


def test_reference_predictor_has_nothing_provable_and_falls_back(note10):
    pred = load_predictor(bundled_predictor_path(W12), W12)
    prob = _Problem(W12, pred, Constraints(max_latency_ms=30), note10, None)
    dom = encoder_domain(pred.encoder, prob.cost)
    assert dom is not None and dom.dim == pred.encoder.dim == 128
    # every unit of the published predictor changes sign over the space: nothing to remove
    assert compress_predictor(pred, prob.cost, thorough=True) is None
    assert search_scorer(pred, prob.cost) == pred.predict_features
    assert prob._fast[2] == pred.predict_features
    # the first layer's exact bounds are attained by archs of the space
    w, b = pred.weights()[0]
    lo, hi = layer_bounds(pred.weights(), dom)[0]
    ext = dom.extremes(w)
    assert np.allclose(np.einsum("ij,ij->i", ext[len(w):], w) + b, hi, atol=1e-5)
    assert np.allclose(np.einsum("ij,ij->i", ext[:len(w)], w) + b, lo, atol=1e-5)


def test_predictors_without_an_mlp_layout_fall_back(note10):
    pred = _constructed_predictor()
    prob = _Problem(W12, pred, Constraints(max_latency_ms=30), note10, None)

    class NoWeights:  # a predict_features without weights: nothing to prove things about
        encoder = pred.encoder
        predict_features = staticmethod(pred.predict_features)

    assert compress_predictor(NoWeights(), prob.cost) is None

    class Lying:  # weights that are not the ones it scores with: the probe check refuses
        encoder, target_std, target_mean = pred.encoder, 0.01, 0.7

        def weights(self):
            return pred.weights()

        def predict_features(self, x):
            return pred.predict_features(x) + 1e-3 * x[:, 0]

    assert compress_predictor(Lying(), prob.cost) is None
    # a memoised compression follows the predictor's weights when they change
    x = random_features(encoder_domain(pred.encoder, prob.cost), 500, np.random.default_rng(2))
    before = search_scorer(pred, prob.cost)(x)
    other = _constructed_predictor(seed=8)
    pred.set_weights(other.weights())
    after = search_scorer(pred, prob.cost)(x)
    assert np.abs(after - other.predict_features(x)).max() < 1e-5
    assert np.abs(after - before).max() > 1e-4
