"""Accuracy predictors: the reference encoding, the reference file format, our own format, fit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ofa_deploy.accuracy import (AccuracyPredictor, ArchEncoder, PredictorError,
                                 bundled_predictor_path, load_predictor)
from supernet.arch import ArchConfig
from supernet.batch import ArchBatch

W12 = "ofa-mbv3-w1.2"
# The OFA authors' ImageNet predictor for this space, shipped with the package (the same bytes
# as the reference's ofa-imagenet-predictor/acc_predictor.pth).
REFERENCE_PREDICTOR = (Path(__file__).resolve().parents[2] / "ofa_deploy" / "assets"
                       / "ofa-mbv3-w1.2-imagenet-acc-predictor.pth")


def ref_state_dict(hidden=(16, 16, 16), seed=0) -> dict:
    """A plain Sequential state_dict shaped like the OFA reference predictor."""
    g = torch.Generator().manual_seed(seed)
    dims = [128, *hidden, 1]
    sd = {}
    for j, (i, o) in enumerate(zip(dims, dims[1:])):
        sd[f"{2 * j}.weight"] = torch.randn(o, i, generator=g) * 0.3
        sd[f"{2 * j}.bias"] = torch.randn(o, generator=g) * 0.1
    return sd


def readme_features(ks, e, d, r) -> list:
    """The 128-d encoding exactly as the reference README describes it, written as loops."""
    v = [0.0] * 128
    for i in range(20):
        stage, pos = divmod(i, 4)
        if pos < d[stage]:
            v[i * 3 + (3, 5, 7).index(ks[i])] = 1.0
            v[60 + i * 3 + (3, 4, 6).index(e[i])] = 1.0
    v[120 + (r - 112) // 16] = 1.0
    return v


def direct_mlp(sd: dict, x: torch.Tensor) -> torch.Tensor:
    n = len(sd) // 2
    for j in range(n):
        x = x @ sd[f"{2 * j}.weight"].T + sd[f"{2 * j}.bias"]
        if j < n - 1:
            x = torch.relu(x)
    return x.reshape(-1)


@pytest.fixture
def ref_file(tmp_path):
    sd = ref_state_dict()
    p = tmp_path / "acc_predictor.pth"
    torch.save(sd, p)
    return p, sd


def sample_archs(space, n, seed):
    rng = np.random.default_rng(seed)
    return [ArchConfig.sample(space, rng) for _ in range(n)]


# -- encoding ------------------------------------------------------------------------------
def test_reference_encoding_matches_readme_layout():
    enc = ArchEncoder.reference()
    assert enc.dim == 128
    archs = [ArchConfig.max(W12), ArchConfig.min(W12), ArchConfig.min(W12, r=176)] + \
        sample_archs(W12, 20, 1)
    x = enc.encode(ArchBatch.from_archs(W12, archs))
    want = np.array([readme_features(a.ks, a.e, a.d, a.r) for a in archs], dtype=np.float32)
    np.testing.assert_array_equal(x, want)
    # max arch: every block k7 (slot 2) and e6 (slot 2), resolution 224 -> bin 7
    assert x[0, 2:60:3].all() and x[0, 62:120:3].all() and x[0, 127] == 1
    # min arch (depth 2): positions 2 and 3 of every stage are all zero in both parts
    skipped = [b for b in range(20) if b % 4 >= 2]
    for b in skipped:
        assert not x[1, 3 * b:3 * b + 3].any() and not x[1, 60 + 3 * b:63 + 3 * b].any()
    assert x[1].sum() == 10 + 10 + 1


def test_skipped_blocks_values_are_ignored():
    """The reference writes 0 into skipped blocks; any value there must encode the same."""
    enc = ArchEncoder.reference()
    a = ArchConfig.min(W12)
    ks = np.array([a.ks]); e = np.array([a.e])
    ks_zero, e_zero = ks.copy(), e.copy()
    skipped = [b for b in range(20) if b % 4 >= 2]
    ks_zero[0, skipped] = 0
    e_zero[0, skipped] = 99
    d, r = np.array([a.d]), np.array([a.r])
    space = ArchBatch.from_archs(W12, [a]).space
    base = enc.encode(ArchBatch(space, ks, e, d, r))
    odd = enc.encode(ArchBatch(space, ks_zero, e_zero, d, r))
    np.testing.assert_array_equal(base, odd)


def test_resolution_bins_and_errors():
    enc = ArchEncoder.reference()
    assert enc.resolution_slot([112, 127, 128, 164, 224, 239]).tolist() == [0, 0, 1, 3, 7, 7]
    assert enc.unsupported_resolutions([100, 112, 240]) == [100, 240]
    sp = ArchBatch.from_archs(W12, [ArchConfig.max(W12)]).space
    a = ArchConfig.max(W12)
    bad = ArchBatch(sp, np.array([a.ks]), np.array([a.e]), np.array([a.d]), np.array([240]))
    with pytest.raises(PredictorError, match="240"):
        enc.encode(bad)
    ks = np.array([a.ks]); ks[0, 5] = 4
    with pytest.raises(PredictorError, match="block 5"):
        enc.encode(ArchBatch(sp, ks, np.array([a.e]), np.array([a.d]), np.array([224])))


def test_space_encoder_exact_resolutions():
    enc = ArchEncoder.for_space("ofa-mbv3-tiny")
    assert enc.resolutions == (32, 40, 48, 56, 64)
    assert enc.dim == 20 * 3 + 20 * 3 + 5
    assert enc.unsupported_resolutions([32, 36, 64]) == [36]
    x = enc.encode(ArchBatch.from_archs("ofa-mbv3-tiny", [ArchConfig.max("ofa-mbv3-tiny", r=48)]))
    assert x[0, 120:].tolist() == [0, 0, 1, 0, 0]
    assert ArchEncoder.from_state(enc.get_state()) == enc
    with pytest.raises(PredictorError, match="stages"):
        ArchEncoder(4, 4, (3, 5, 7), (3, 4, 6), resolutions=(32,)).check_space("ofa-mbv3-tiny")


# -- the reference format ------------------------------------------------------------------
def test_reference_predictor_matches_direct_mlp(ref_file):
    path, sd = ref_file
    pred = load_predictor(path, W12)
    assert pred.source_format == "ofa-reference"
    assert pred.hidden == (16, 16, 16)
    archs = [ArchConfig.max(W12), ArchConfig.min(W12)] + sample_archs(W12, 30, 2)
    got = pred.predict(ArchBatch.from_archs(W12, archs))
    x = torch.tensor([readme_features(a.ks, a.e, a.d, a.r) for a in archs])
    want = direct_mlp(sd, x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert pred.predict_one(archs[3]) == pytest.approx(float(want[3]), abs=1e-6)
    # same file, format named explicitly
    np.testing.assert_array_equal(load_predictor(path, W12, format="ofa-reference")
                                  .predict(archs), got)


def test_reference_format_checks(tmp_path, ref_file):
    path, sd = ref_file
    with pytest.raises(PredictorError, match="not an ofa-deploy predictor"):
        load_predictor(path, W12, format="ofa-deploy")
    wrong = dict(sd)
    wrong["0.weight"] = torch.zeros(16, 100)
    p = tmp_path / "wrong.pth"
    torch.save(wrong, p)
    with pytest.raises(PredictorError, match="100 features"):
        load_predictor(p, W12)
    with pytest.raises(PredictorError, match="cannot encode any resolution"):
        load_predictor(path, "ofa-mbv3-tiny")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(PredictorError, match="not a loadable torch file"):
        load_predictor(junk, W12)
    with pytest.raises(PredictorError, match="not found"):
        load_predictor(tmp_path / "missing.pth", W12)
    other = tmp_path / "other.pth"
    torch.save({"foo": torch.zeros(2)}, other)
    with pytest.raises(PredictorError, match="neither"):
        load_predictor(other, W12)
    with pytest.raises(PredictorError, match="unknown predictor format"):
        load_predictor(path, W12, format="onnx")


def test_real_reference_predictor_value():
    """The value the reference's own tutorial code prints for this arch (run once by hand)."""
    # the search loads the .npz twin of the shipped reference file; both give the value
    assert bundled_predictor_path(W12) == REFERENCE_PREDICTOR.with_suffix(".npz")
    a = ArchConfig(ks=[3, 3, 3, 7, 5, 3, 3, 5, 5, 3, 7, 7, 3, 5, 3, 7, 7, 5, 3, 7],
                   e=[4, 3, 3, 3, 4, 4, 3, 6, 4, 4, 3, 3, 4, 4, 4, 4, 6, 6, 6, 3],
                   d=[2, 3, 4, 3, 4], r=208)
    for path in (REFERENCE_PREDICTOR, bundled_predictor_path(W12)):
        pred = load_predictor(path, W12)
        assert pred.predict_one(a) == pytest.approx(0.8244234919548035, abs=1e-6)


# -- our own predictor ---------------------------------------------------------------------
def synthetic_accuracy(batch: ArchBatch) -> np.ndarray:
    """A smooth made-up accuracy: more capacity and resolution help, with diminishing returns."""
    act = batch.active
    cap = ((batch.ks / 7.0 + batch.e / 6.0) * act).sum(axis=1)
    return 0.6 + 0.1 * np.tanh(cap / 20.0) + 0.05 * (batch.r - 32) / 32.0


def test_fit_reaches_a_useful_ranking_and_round_trips(tmp_path):
    space = "ofa-mbv3-tiny"
    batch = ArchBatch.sample(space, 600, np.random.default_rng(0))
    y = synthetic_accuracy(batch) + np.random.default_rng(1).normal(0, 0.002, len(batch))
    pred = AccuracyPredictor(ArchEncoder.for_space(space), hidden=(64, 64), space=space)
    rep = pred.fit(batch, y, epochs=60, lr=3e-3, seed=0, val_fraction=0.25)
    assert rep.n_val == 150 and rep.n_train == 450
    assert rep.kendall_tau > 0.7, rep
    assert rep.val_rmse < 0.01, rep
    # save / load keep the encoding and the normalisation
    path = pred.save(tmp_path / "pred.pth")
    back = load_predictor(path, space)
    assert back.source_format == "ofa-deploy" and back.hidden == (64, 64)
    assert back.encoder == pred.encoder
    test = ArchBatch.sample(space, 50, np.random.default_rng(7))
    np.testing.assert_array_equal(back.predict(test), pred.predict(test))
    state = pred.get_state()
    assert state["format"] == "ofa-deploy-accuracy-predictor" and state["version"] == 1
    np.testing.assert_array_equal(AccuracyPredictor.from_state(state).predict(test),
                                  pred.predict(test))
    with pytest.raises(PredictorError, match="trained for space ofa-mbv3-tiny"):
        load_predictor(path, W12)
    with pytest.raises(PredictorError, match="not an OFA reference"):
        load_predictor(path, space, format="ofa-reference")


def test_fit_is_deterministic_and_validates():
    space = "ofa-mbv3-tiny"
    batch = ArchBatch.sample(space, 80, np.random.default_rng(0))
    y = synthetic_accuracy(batch)

    def run(seed):
        p = AccuracyPredictor(ArchEncoder.for_space(space), hidden=(16,), space=space)
        p.fit(batch, y, epochs=5, seed=seed)
        return p.predict(batch)

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))
    p = AccuracyPredictor(ArchEncoder.for_space(space), hidden=(8,), space=space)
    with pytest.raises(PredictorError, match="80 archs but 3"):
        p.fit(batch, y[:3])
    with pytest.raises(PredictorError, match="val_fraction"):
        p.fit(batch, y, val_fraction=1.0)
    with pytest.raises(PredictorError, match="finite"):
        p.fit(batch, np.full(80, np.nan))


def test_newer_version_is_refused(tmp_path):
    p = AccuracyPredictor(ArchEncoder.for_space("ofa-mbv3-tiny"), hidden=(4,),
                          space="ofa-mbv3-tiny")
    state = p.get_state()
    state["version"] = 99
    f = tmp_path / "new.pth"
    torch.save(state, f)
    with pytest.raises(PredictorError, match="newer"):
        load_predictor(f, "ofa-mbv3-tiny")


def test_bundled_predictor_lookup(tmp_path, monkeypatch):
    import ofa_deploy.predictor_files as acc

    for name in ("ofa-mbv3-tiny", "ofa-mbv3-w1.2"):  # both ship with the package
        assert bundled_predictor_path(name).is_file()
        assert load_predictor(bundled_predictor_path(name), name).predict(
            [ArchConfig.max(name)]).shape == (1,)
    assert bundled_predictor_path("ofa-mbv3-w1.0") is None
    monkeypatch.setattr(acc, "BUNDLED_PREDICTORS", {"ofa-mbv3-tiny": "x.pth"})
    monkeypatch.setattr(acc, "__file__", str(tmp_path / "predictor_files.py"))
    assert bundled_predictor_path("ofa-mbv3-tiny") is None
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "x.pth").write_bytes(b"")
    assert bundled_predictor_path("ofa-mbv3-tiny") == tmp_path / "assets" / "x.pth"


# -- numpy inference and the .npz format -------------------------------------------------------
def test_numpy_forward_equals_torch_forward(ref_file):
    """predict_features runs in numpy; the torch module (sharing its weights) agrees."""
    path, sd = ref_file
    pred = load_predictor(path, W12)
    x = (np.random.default_rng(3).random((257, 128)) < 0.3).astype(np.float32)
    with torch.no_grad():
        want = pred.model(torch.from_numpy(x)).reshape(-1).numpy().astype(np.float64)
    np.testing.assert_allclose(pred.predict_features(x), want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(pred.predict_features(x), direct_mlp(sd, torch.from_numpy(x)),
                               rtol=0, atol=1e-5)
    # the module shares memory with the numpy weights: an in-place change is seen by both
    with torch.no_grad():
        pred.model[-1].bias += 1.0
    np.testing.assert_allclose(pred.predict_features(x), want + 1.0, rtol=0, atol=1e-5)


def test_npz_round_trip_without_torch_load(tmp_path, monkeypatch):
    space = "ofa-mbv3-tiny"
    pred = AccuracyPredictor(ArchEncoder.for_space(space), hidden=(16, 8), space=space, seed=2,
                             target_mean=0.7, target_std=0.05, metadata={"note": "x"})
    path = pred.save(tmp_path / "pred.npz")
    import ofa_deploy.accuracy as acc

    def no_torch():
        raise AssertionError("torch used to read a .npz predictor")

    monkeypatch.setattr(acc, "_torch", no_torch)
    back = load_predictor(path, space)
    test = ArchBatch.sample(space, 64, np.random.default_rng(1))
    np.testing.assert_array_equal(back.predict(test), pred.predict(test))
    assert back.encoder == pred.encoder and back.hidden == (16, 8)
    assert (back.target_mean, back.target_std) == (0.7, 0.05)
    assert back.metadata["note"] == "x" and back.metadata["path"] == str(path)
    with pytest.raises(PredictorError, match="trained for space ofa-mbv3-tiny"):
        load_predictor(path, W12)
    with pytest.raises(PredictorError, match="it is an ofa-deploy .npz"):
        load_predictor(path, space, format="ofa-reference")
    # a damaged archive: wrong layer shape, missing header
    np.savez(tmp_path / "bad.npz", header=np.array(open(path, "rb") and "{}"))
    with pytest.raises(PredictorError, match="not an ofa-deploy predictor"):
        load_predictor(tmp_path / "bad.npz", space)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["w1"] = arrays["w1"][:, :3]
    np.savez(tmp_path / "shape.npz", **arrays)
    with pytest.raises(PredictorError, match="weights do not fit: layer 1"):
        load_predictor(tmp_path / "shape.npz", space)


@pytest.mark.parametrize("space", ["ofa-mbv3-w1.2", "ofa-mbv3-tiny"])
def test_bundled_npz_twin_equals_its_torch_file(space):
    """The shipped .npz is the twin of the shipped torch file (rebuild it with
    ``write_npz_twin`` if this fails) and is what bundled_predictor_path picks."""
    import ofa_deploy.accuracy as acc

    twin = bundled_predictor_path(space)
    src = Path(acc.__file__).resolve().parent / "assets" / acc.BUNDLED_PREDICTORS[space]
    assert twin.suffix == ".npz" and twin.with_suffix(src.suffix) == src and src.is_file()
    a, b = load_predictor(src, space), load_predictor(twin, space)
    assert a.source_format == b.source_format and a.encoder == b.encoder
    for (wa, ba), (wb, bb) in zip(a.weights(), b.weights()):
        np.testing.assert_array_equal(wa, wb)
        np.testing.assert_array_equal(ba, bb)
    test = ArchBatch.sample(space, 300, np.random.default_rng(0))
    np.testing.assert_array_equal(a.predict(test), b.predict(test))
