"""Spaces as data: registry, derived structure, state round trip, errors."""
from __future__ import annotations

import dataclasses

import pytest

from supernet import OfaDeployError, SpaceError, Space, get_space, list_spaces, make_divisible
from supernet.space import register_space


def test_registry_lists_the_shipped_spaces():
    assert {"ofa-mbv3-w1.0", "ofa-mbv3-w1.2", "ofa-mbv3-tiny"} <= set(list_spaces())
    for name in list_spaces():
        sp = get_space(name)
        assert sp.name == name and get_space(sp) is sp
        assert sp.summary()


def test_unknown_space_is_a_user_error_naming_the_choices():
    with pytest.raises(SpaceError) as exc:
        get_space("ofa-mbv3-w2.0")
    msg = str(exc.value)
    assert msg.startswith("unknown space 'ofa-mbv3-w2.0'") and "ofa-mbv3-w1.0" in msg
    assert isinstance(exc.value, OfaDeployError) and isinstance(exc.value, KeyError)


def test_reference_widths_and_structure():
    w10, w12 = get_space("ofa-mbv3-w1.0"), get_space("ofa-mbv3-w1.2")
    assert (w10.stem_width, w10.first_block_width, w10.stage_widths) == (16, 16, (24, 40, 80, 112, 160))
    assert (w10.final_expand_width, w10.feature_mix_width) == (960, 1280)
    assert (w12.stem_width, w12.stage_widths, w12.final_expand_width, w12.feature_mix_width) == \
        (24, (32, 48, 96, 136, 192), 1152, 1536)
    assert w10.num_blocks == 20 and w10.downsample == 32
    # middle widths: round(cin * e) made divisible by 8, SE a quarter of that
    assert w10.middle_channels(40, 3) == 120 and w10.middle_channels(24, 4) == 96
    assert w12.middle_channels(136, 3) == 408 and w10.se_channels(120) == 32
    strides = [b.stride for b in w10.blocks]
    assert strides == [2, 1, 1, 1] * 3 + [1, 1, 1, 1] + [2, 1, 1, 1]
    skips = [b.identity_skip for b in w10.blocks]
    assert skips == [False, True, True, True] * 5
    assert w10.num_subnets() == (81 + 729 + 6561) ** 5
    assert w10.num_subnets(per_resolution=False) == w10.num_subnets() * 25
    tiny = get_space("ofa-mbv3-tiny")
    assert min(tiny.resolutions) // tiny.downsample >= 2  # still a spatial map before pooling


def test_make_divisible_matches_mobilenet_rounding():
    assert [make_divisible(v) for v in (16, 19.2, 20, 23.9, 960 * 1.2, 1280 * 1.2, 4)] == \
        [16, 24, 24, 24, 1152, 1536, 8]
    assert make_divisible(10, 8) == 16  # never loses more than 10%


def test_state_round_trip():
    for name in list_spaces():
        sp = get_space(name)
        assert Space.from_state(sp.get_state()) == sp
    with pytest.raises(ValueError, match="unknown space fields: colour"):
        Space.from_state({**get_space("ofa-mbv3-tiny").get_state(), "colour": "red"})


@pytest.mark.parametrize("change,needle", [
    (dict(stage_strides=(2, 2)), "stage_strides must have 5 entries"),
    (dict(kernel_choices=(3, 4)), "kernel sizes must be odd"),
    (dict(expand_choices=(6, 3)), "expand_choices must be non-empty, sorted, unique"),
    (dict(resolutions=()), "resolutions must be non-empty"),
    (dict(stage_acts=("relu", "relu", "gelu", "h_swish", "h_swish")), "unknown activation 'gelu'"),
])
def test_bad_space_definitions(change, needle):
    with pytest.raises(ValueError, match=needle):
        dataclasses.replace(get_space("ofa-mbv3-tiny"), **change)


def test_registering_a_name_twice_is_refused():
    before = list_spaces()
    with pytest.raises(ValueError, match="registered twice"):
        register_space(lambda: get_space("ofa-mbv3-tiny"))
    assert list_spaces() == before
