"""ArchConfig: validation, (de)serialisation, reference dicts, seeded sampling."""
from __future__ import annotations

import json

import numpy as np
import pytest

from supernet import ArchConfig, ArchError, OfaDeployError, get_space, list_spaces
from supernet.batch import ArchBatch

W10 = "ofa-mbv3-w1.0"


def test_min_max_shapes_and_values():
    for name in list_spaces():
        sp = get_space(name)
        hi, lo = ArchConfig.max(sp), ArchConfig.min(sp)
        assert len(hi.ks) == len(hi.e) == sp.num_blocks and len(hi.d) == sp.num_stages
        assert set(hi.ks) == {max(sp.kernel_choices)} and set(lo.e) == {min(sp.expand_choices)}
        assert hi.r == max(sp.resolutions) and lo.r == min(sp.resolutions)
        assert hi.active_blocks(sp) == tuple(range(sp.num_blocks))
        assert len(lo.active_blocks(sp)) == sum(min(sp.stage_depth_choices(s))
                                                for s in range(sp.num_stages))


@pytest.mark.parametrize("change,needle", [
    (dict(ks=(7,) * 19), "ks has 19 entries"),
    (dict(e=(6,) * 21), "e has 21 entries"),
    (dict(d=(4,) * 4), "d has 4 entries"),
    (dict(d=(4, 4, 5, 4, 4)), "d[2]=5 not in depth choices [2, 3, 4]"),
    (dict(ks=(7,) * 5 + (4,) + (7,) * 14), "ks[5]=4 not in kernel choices [3, 5, 7]"),
    (dict(e=(6,) * 7 + (5,) + (6,) * 12), "e[7]=5 not in expand choices [3, 4, 6]"),
    (dict(r=225), "resolution 225 not in space ofa-mbv3-w1.0 resolutions (128..224"),
    (dict(r=96), "resolution 96 not in space"),
])
def test_validation_names_the_bad_field(change, needle):
    base = ArchConfig.max(W10).to_dict()
    base.update(change)
    with pytest.raises(ArchError) as exc:
        ArchConfig(**base).validate(W10)
    assert needle in str(exc.value)
    assert isinstance(exc.value, OfaDeployError) and isinstance(exc.value, ValueError)


def test_values_of_skipped_blocks_are_ignored_and_canonicalised():
    sp = get_space(W10)
    a = ArchConfig.min(sp).to_dict()
    a["ks"][3] = 99  # block 3 is skipped at depth 2
    a["e"][2] = 0
    arch = ArchConfig(**a).validate(sp)
    c = arch.canonical(sp)
    assert c.ks[3] == min(sp.kernel_choices) and c.e[2] == min(sp.expand_choices)
    assert c == ArchConfig.min(sp)
    # ...but an active block with a bad value is still refused
    a["ks"][0] = 99
    with pytest.raises(ArchError, match=r"ks\[0\]=99"):
        ArchConfig(**a).validate(sp)


@pytest.mark.parametrize("kw,needle", [
    (dict(ks="777", e=(6,), d=(4,), r=224), "ks must be a list of integers"),
    (dict(ks=(7, "x"), e=(6,), d=(4,), r=224), "ks must contain integers"),
    (dict(ks=(7,), e=(6.5,), d=(4,), r=224), "e must contain integers"),
    (dict(ks=(7,), e=(6,), d=(True,), r=224), "d must contain integers"),
    (dict(ks=(7,), e=(6,), d=(4,), r="224"), "resolution must be an integer"),
    (dict(ks=(7,), e=(6,), d=(4,), r=True), "resolution must be an integer"),
])
def test_constructor_type_errors(kw, needle):
    with pytest.raises(ArchError, match=needle):
        ArchConfig(**kw)


def test_integral_floats_and_numpy_ints_are_accepted():
    a = ArchConfig(ks=[np.int64(3), 5.0], e=(np.int32(4), 6), d=[2.0], r=np.int64(160))
    assert a.ks == (3, 5) and a.e == (4, 6) and a.d == (2,) and a.r == 160
    assert all(type(v) is int for v in (*a.ks, *a.e, *a.d, a.r))


def test_json_round_trip(rng):
    for name in list_spaces():
        for _ in range(10):
            a = ArchConfig.sample(name, rng)
            assert ArchConfig.from_json(a.to_json(), name) == a
            assert ArchConfig.from_dict(json.loads(json.dumps(a.to_dict())), name) == a
            assert hash(ArchConfig.from_json(a.to_json())) == hash(a)


def test_reference_dicts():
    sp = get_space(W10)
    ks, e, d = [3, 5, 7, 3] * 5, [3, 4, 6, 4] * 5, [2, 3, 4, 3, 2]
    for rkey, rval in (("image_size", 192), ("r", 192), ("resolution", 192), ("image_size", [192])):
        a = ArchConfig.from_dict({"ks": ks, "e": e, "d": d, rkey: rval}, sp)
        assert a == ArchConfig(tuple(ks), tuple(e), tuple(d), 192)
    # The reference's search output wraps the arch; wid is carried but not elastic here
    wrapped = {"arch": {"ks": ks, "e": e, "d": d, "image_size": 160, "wid": None}, "acc": 0.7}
    assert ArchConfig.from_dict(wrapped, sp).r == 160
    # No resolution: the space's largest, and only when the space is known
    assert ArchConfig.from_dict({"ks": ks, "e": e, "d": d}, sp).r == max(sp.resolutions)
    with pytest.raises(ArchError, match="no resolution"):
        ArchConfig.from_dict({"ks": ks, "e": e, "d": d})
    with pytest.raises(ArchError, match=r"missing field\(s\): e, d"):
        ArchConfig.from_dict({"ks": ks, "r": 160}, sp)
    with pytest.raises(ArchError, match="wid"):
        ArchConfig.from_dict({"ks": ks, "e": e, "d": d, "r": 160, "wid": [1, 2]}, sp)
    with pytest.raises(ArchError, match="must be a JSON object"):
        ArchConfig.from_dict([ks, e, d], sp)
    with pytest.raises(ArchError, match="not valid JSON"):
        ArchConfig.from_json("{ks: [3]}", sp)


def test_seeded_sampling_is_deterministic_and_varied():
    for name in list_spaces():
        sp = get_space(name)
        a = [ArchConfig.sample(sp, np.random.default_rng(7)) for _ in range(2)]
        assert a[0] == a[1]
        many = [ArchConfig.sample(sp, np.random.default_rng(s)) for s in range(40)]
        assert len(set(many)) == 40
        for arch in many:
            arch.validate(sp)
            assert arch == arch.canonical(sp)
        # Every choice of every dimension shows up in a modest sample
        assert {k for a_ in many for k in a_.ks} == set(sp.kernel_choices)
        for s in range(sp.num_stages):
            assert {a_.d[s] for a_ in many} == set(sp.stage_depth_choices(s))
        assert {a_.r for a_ in many} <= set(sp.resolutions)
    only = ArchConfig.sample(W10, np.random.default_rng(0), resolutions=[160])
    assert only.r == 160
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        ArchConfig.sample(W10, 0)


def test_string_round_trip(rng):
    for name in list_spaces():
        for _ in range(20):
            a = ArchConfig.sample(name, rng)
            s = a.to_string(name)
            assert ArchConfig.from_string(s, name) == a
            assert ArchConfig.parse(s, name) == a
    s = ArchConfig.max(W10, 224).to_string(W10)
    assert s == "r224-d4.4.4.4.4-k7777.7777.7777.7777.7777-e6666.6666.6666.6666.6666"


@pytest.mark.parametrize("text,needle", [
    ("r224-d4.4-k7777.7777-e6666.6666", "must have 5 stages"),
    ("r224-d2.2.2.2.2-k777.77.77.77.77-e66.66.66.66.66", "stage 0 has depth 2 but 3 kernels"),
    ("r224-d2.2.2.2.2-k44.77.77.77.77-e66.66.66.66.66", "ks[0]=4 not in kernel choices"),
    ("r225-d2.2.2.2.2-k77.77.77.77.77-e66.66.66.66.66", "resolution 225"),
    ("r224_d2", "cannot parse arch string"),
])
def test_bad_strings(text, needle):
    with pytest.raises(ArchError) as exc:
        ArchConfig.from_string(text, W10)
    assert needle in str(exc.value)


def test_parse_forms(tmp_path, rng):
    a = ArchConfig.sample(W10, rng)
    f = tmp_path / "arch.json"
    f.write_text(json.dumps({"ks": list(a.ks), "e": list(a.e), "d": list(a.d), "image_size": a.r}))
    assert ArchConfig.parse(str(f), W10) == a
    assert ArchConfig.parse(" " + a.to_json(), W10) == a
    assert ArchConfig.parse("max", W10) == ArchConfig.max(W10)
    assert ArchConfig.parse("min", W10) == ArchConfig.min(W10)
    with pytest.raises(ArchError, match="not min, max, an arch string, JSON, or an existing file"):
        ArchConfig.parse(str(tmp_path / "nope.json"), W10)
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(ArchError, match="not valid JSON"):
        ArchConfig.parse(str(bad), W10)
    # An arch of another space is refused with the reason
    with pytest.raises(ArchError, match="resolution 224 not in space ofa-mbv3-tiny"):
        ArchConfig.parse(a.with_resolution(224).to_json(), "ofa-mbv3-tiny")


def test_arch_batch_round_trip_and_keys(rng):
    for name in list_spaces():
        sp = get_space(name)
        archs = [ArchConfig.sample(sp, rng) for _ in range(25)]
        batch = ArchBatch.from_archs(sp, archs + archs[:5])
        assert batch.to_archs() == archs + archs[:5]
        assert len(np.unique(batch.keys())) == 25
        assert (batch.active.sum(1) == batch.d.sum(1)).all()
        again = ArchBatch.sample(sp, 30, np.random.default_rng(3))
        assert (again.keys() == ArchBatch.sample(sp, 30, np.random.default_rng(3)).keys()).all()
        for a in again.to_archs():
            a.validate(sp)
            assert a == a.canonical(sp)
        sub = batch[np.arange(3)]
        assert sub.to_archs() == archs[:3]
        assert len(ArchBatch.concat([sub, sub])) == 6
    assert len(ArchBatch.from_archs(W10, [])) == 0
