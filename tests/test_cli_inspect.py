"""``ofa-deploy spaces`` and ``ofa-deploy inspect``: values, formats, and one-line errors."""
from __future__ import annotations

import json

import pytest
import torch

from supernet import ArchConfig, Supernet, get_space, list_spaces, save_supernet


def _ok_json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _one_line_error(result, *needles):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_spaces_json(run_cli):
    from supernet.resnet import RESNET_SPACES

    data = _ok_json(run_cli("spaces", "--json"))
    assert [d["name"] for d in data] == [*list_spaces(), *RESNET_SPACES]
    assert {d["family"] for d in data} == {"mbv3", "proxyless", "resnet"}
    by_name = {d["name"]: d for d in data}
    w10 = by_name["ofa-mbv3-w1.0"]
    assert w10["resolutions"] == list(range(128, 225, 4)) and w10["num_classes"] == 1000
    assert w10["num_subnets"] == (81 + 729 + 6561) ** 5 * 25
    assert by_name["ofa-mbv3-tiny"]["num_classes"] == 10


def test_spaces_table(run_cli):
    r = run_cli("spaces")
    assert r.exit_code == 0
    from supernet.resnet import RESNET_SPACES

    names = [line.split()[0] for line in r.stdout.strip().splitlines()]
    assert names == [*list_spaces(), *RESNET_SPACES]
    assert "ofa-proxyless-w1.3" in names and "ofa-resnet50" in names


def test_inspect_max_w10(run_cli):
    d = _ok_json(run_cli("inspect", "--space", "ofa-mbv3-w1.0", "--arch", "max", "--json"))
    assert (d["params"], d["macs"]) == (7664760, 566170656)
    assert d["supernet_params"] == 7678880
    assert d["arch"] == ArchConfig.max("ofa-mbv3-w1.0").to_dict()
    assert d["arch_string"] == ArchConfig.max("ofa-mbv3-w1.0").to_string("ofa-mbv3-w1.0")
    assert d["space"] == "ofa-mbv3-w1.0"


def test_inspect_min_at_224(run_cli):
    d = _ok_json(run_cli("inspect", "--space", "ofa-mbv3-w1.0", "--arch", "min",
                         "--resolution", "224", "--json"))
    assert d["macs"] == 121278672 and d["arch"]["r"] == 224
    assert d["supernet_params"] == 7678880
    human = run_cli("inspect", "--space", "ofa-mbv3-w1.0", "--arch", "min", "--resolution", "224")
    assert human.exit_code == 0
    assert "121,278,672 (121.3M)" in human.stdout and "7,678,880" in human.stdout


def test_inspect_space_only_and_w12(run_cli):
    d = _ok_json(run_cli("inspect", "--space", "ofa-mbv3-w1.2", "--json"))
    assert d["supernet_params"] == 10715752
    assert "arch" not in d and "macs" not in d
    assert d["max"]["arch"]["r"] == 224 and d["min"]["arch"]["r"] == 160
    assert set(d["macs_by_resolution"]) == {str(r) for r in get_space("ofa-mbv3-w1.2").resolutions}


def test_inspect_reference_arch_file_and_string(run_cli, tmp_path):
    ks, e, d = [3, 5, 7, 5] * 5, [3, 4, 6, 4] * 5, [2, 3, 4, 3, 2]
    f = tmp_path / "net.config"
    f.write_text(json.dumps({"ks": ks, "e": e, "d": d, "image_size": 192}))
    a = _ok_json(run_cli("inspect", "--space", "ofa-mbv3-w1.0", "--arch", str(f), "--json"))
    b = _ok_json(run_cli("inspect", "--space", "ofa-mbv3-w1.0", "--arch", a["arch_string"], "--json"))
    assert a["arch"]["r"] == 192 and (a["params"], a["macs"]) == (b["params"], b["macs"])
    assert a["macs"] < 566170656


def test_inspect_with_a_checkpoint(run_cli, tmp_path):
    net = Supernet("ofa-mbv3-tiny")
    path = tmp_path / "tiny.pt"
    save_supernet(net, path, metadata={"run": "t"})
    d = _ok_json(run_cli("inspect", "--supernet", str(path), "--arch", "max", "--json"))
    assert d["space"] == "ofa-mbv3-tiny"
    assert d["checkpoint"]["params"] == d["supernet_params"] == sum(p.numel() for p in net.parameters())
    assert d["checkpoint"]["metadata"] == {"run": "t"}
    ref = tmp_path / "ref.pth"
    torch.save({"state_dict": net.state_dict()}, ref)
    _one_line_error(run_cli("inspect", "--supernet", str(ref)), "name its space")
    d = _ok_json(run_cli("inspect", "--supernet", str(ref), "--space", "ofa-mbv3-tiny", "--json"))
    assert d["checkpoint"]["params"] == d["supernet_params"]


@pytest.mark.parametrize("args,needles", [
    (("--space", "nope"), ("unknown space 'nope'", "ofa-mbv3-w1.0")),
    (("--space", "ofa-mbv3-w1.0", "--arch", "maxi"), ("arch 'maxi' is not min, max",)),
    (("--space", "ofa-mbv3-w1.0", "--arch", "max", "--resolution", "100"), ("resolution 100 not in space",)),
    (("--space", "ofa-mbv3-w1.0", "--arch", '{"ks": [9], "e": [6], "d": [4]}'), ("d has 1 entries",)),
    (("--space", "ofa-mbv3-w1.0", "--arch", "r224-d2.2.2.2.2-k99.77.77.77.77-e66.66.66.66.66"),
     ("ks[0]=9 not in kernel choices",)),
    (("--space", "ofa-mbv3-tiny", "--supernet", "missing.pt"), ("no checkpoint file 'missing.pt'",)),
])
def test_inspect_user_errors_are_one_line(run_cli, args, needles):
    _one_line_error(run_cli("inspect", *args), *needles)


def test_corrupt_checkpoint_is_one_line(run_cli, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage" * 10)
    _one_line_error(run_cli("inspect", "--supernet", str(bad), "--space", "ofa-mbv3-tiny"),
                    f"cannot read checkpoint {bad}")


@pytest.mark.parametrize("args,needle", [
    ((), "give --space NAME"),
    (("--space", "ofa-mbv3-w1.0", "--resolution", "224"), "--resolution needs --arch"),
    (("--space", "ofa-mbv3-w1.0", "--arch", "max", "--resolution", "big"), "'big' is not a valid integer"),
])
def test_inspect_usage_errors(run_cli, args, needle):
    r = run_cli("inspect", *args)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert needle in r.stderr and r.stdout == ""
