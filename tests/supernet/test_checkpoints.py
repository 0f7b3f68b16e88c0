"""Checkpoints: our format, reference layouts, and clear errors for everything else."""
from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest
import torch

from supernet import (
    ArchConfig, CheckpointError, OfaDeployError, SpaceError, Supernet, load_supernet, save_supernet,
)
from supernet.checkpoint import (
    FORMAT_NAME, atomic_torch_save, load_reference_state_dict, load_state_dict_file,
    remap_reference_keys,
)

TINY = "ofa-mbv3-tiny"


def _x(r: int = 32) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, r, r)).astype(np.float32))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module, atol: float = 0.0) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        torch.allclose(sa[k].float(), sb[k].float(), atol=atol, rtol=0) for k in sa)


def test_save_load_round_trip(filled_supernet, tmp_path):
    net = filled_supernet(TINY)
    path = tmp_path / "sub" / "net.pt"
    save_supernet(net, path, metadata={"epochs": 3, "note": "test"})
    assert [p.name for p in path.parent.iterdir()] == ["net.pt"]  # no temp file left behind
    loaded = load_supernet(path)
    assert loaded.space == net.space and _same_weights(loaded, net)
    assert loaded.checkpoint_metadata == {"epochs": 3, "note": "test"}
    arch = ArchConfig.sample(TINY, np.random.default_rng(0)).with_resolution(32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(_x(), arch), net(_x(), arch))
    # naming the right space is fine, the wrong one is an error that says both
    assert _same_weights(load_supernet(path, TINY), net)
    with pytest.raises(CheckpointError, match="checkpoint of space ofa-mbv3-tiny, not ofa-mbv3-w1.0"):
        load_supernet(path, "ofa-mbv3-w1.0")
    with pytest.raises(SpaceError, match="unknown space 'ofa-mbv3-tinyy'"):  # a typo is not ignored
        load_supernet(path, "ofa-mbv3-tinyy")


def test_fp16_checkpoint_is_smaller_and_loads_as_fp32(filled_supernet, tmp_path):
    net = filled_supernet(TINY)
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    save_supernet(net, full)
    save_supernet(net, half, half=True)
    assert os.path.getsize(half) < 0.6 * os.path.getsize(full)
    loaded = load_supernet(half)
    assert all(v.dtype == torch.float32 for v in loaded.state_dict().values() if v.is_floating_point())
    assert _same_weights(loaded, net, atol=2e-3)
    assert not _same_weights(loaded, net)  # it really was rounded
    x, arch = _x(), ArchConfig.max(TINY, 32)
    with torch.no_grad():
        a, b = loaded.eval()(x, arch), net(x, arch)
    assert float((a - b).abs().max()) < 2e-2 * max(1.0, float(b.abs().max()))


def test_loading_never_unpickles_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {path}"):
        load_state_dict_file(path)
    with pytest.raises(CheckpointError):
        load_supernet(path, TINY)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_corrupt_files(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as exc:
        load_supernet(path, TINY)
    msg = str(exc.value)
    assert msg.startswith(f"cannot read checkpoint {path}") and "\n" not in msg


def test_truncated_checkpoint(filled_supernet, tmp_path):
    path = tmp_path / "net.pt"
    save_supernet(filled_supernet(TINY), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_supernet(path)


def test_missing_file_and_non_dict(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint file .*nope.pt.* and no registered supernet"):
        load_supernet(tmp_path / "nope.pt", TINY)
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="holds a list, not a dict"):
        load_supernet(path, TINY)
    empty = tmp_path / "empty.pt"
    torch.save({"state_dict": {}}, empty)
    with pytest.raises(CheckpointError, match="holds no tensors"):
        load_supernet(empty, TINY)


def test_reference_layout_needs_a_space_and_must_fit_it(tmp_path):
    net = Supernet(TINY)
    path = tmp_path / "ref.pth"
    torch.save(net.state_dict(), path)
    with pytest.raises(CheckpointError, match="reference-layout checkpoint: name its space"):
        load_supernet(path)
    assert _same_weights(load_supernet(path, TINY), net)
    with pytest.raises(CheckpointError) as exc:
        load_supernet(path, "ofa-mbv3-w1.0")
    msg = str(exc.value)
    assert f"{path} does not fit space ofa-mbv3-w1.0" in msg
    # same key names, different widths: only shapes are reported, the first ones by name
    assert "missing" not in msg and "unexpected" not in msg
    m = re.search(r": (\d+) shape mismatch\(es\) \(e\.g\. ([\w.]+): checkpoint (\([\d, ]+\)) "
                  r"vs model (\([\d, ]+\))", msg)
    assert m, msg
    own, ref = Supernet("ofa-mbv3-w1.0").state_dict(), net.state_dict()
    assert int(m.group(1)) == sum(own[k].shape != v.shape for k, v in ref.items())
    assert m.group(3) == str(tuple(ref[m.group(2)].shape))
    assert m.group(4) == str(tuple(own[m.group(2)].shape))


def test_mismatches_are_named(tmp_path):
    sd = Supernet(TINY).state_dict()
    key_shape = "blocks.3.conv.point_linear.conv.conv.weight"
    sd[key_shape] = torch.zeros(3, 3, 1, 1)
    del sd["classifier.linear.bias"]
    sd["blocks.99.conv.extra.weight"] = torch.zeros(1)
    path = tmp_path / "mismatch.pt"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointError) as exc:
        load_supernet(path, TINY)
    msg = str(exc.value)
    assert f"{path} does not fit space {TINY}" in msg
    assert "1 missing key(s) (e.g. classifier.linear.bias)" in msg
    assert "1 unexpected key(s) (e.g. blocks.99.conv.extra.weight)" in msg
    assert f"1 shape mismatch(es) (e.g. {key_shape}: checkpoint (3, 3, 1, 1) vs model" in msg
    assert "\n" not in msg


def test_our_format_with_a_bad_state_is_refused(filled_supernet, tmp_path):
    net = filled_supernet(TINY)
    path = tmp_path / "net.pt"
    save_supernet(net, path)
    obj = torch.load(path, weights_only=True)
    obj["state_dict"].pop("first_conv.conv.weight")
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=r"missing key\(s\) \(e.g. first_conv.conv.weight\)"):
        load_supernet(path)
    obj["format_version"] = 99
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="format version 99 is newer"):
        load_supernet(path)


def test_unknown_space_in_our_format_uses_the_stored_config(filled_supernet, tmp_path):
    net = filled_supernet(TINY)
    path = tmp_path / "net.pt"
    save_supernet(net, path)
    obj = torch.load(path, weights_only=True)
    obj["space"] = "my-private-space"
    obj["space_config"]["name"] = "my-private-space"
    torch.save(obj, path)
    loaded = load_supernet(path)
    assert loaded.space.name == "my-private-space" and _same_weights(loaded, net)
    obj["space_config"] = {"nonsense": 1}
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="unknown space 'my-private-space' and unreadable"):
        load_supernet(path)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "module", "legacy", "legacy+module"])
def test_reference_layouts_round_trip(filled_supernet, tmp_path, wrap):
    net = filled_supernet(TINY)
    sd = net.state_dict()
    if "legacy" in wrap:
        sd = {k.replace(".conv.", ".mobile_inverted_conv.", 1) if k.startswith("blocks.") else k: v
              for k, v in sd.items()}
        assert any(".mobile_inverted_conv." in k for k in sd)
    if "module" in wrap:
        sd = {"module." + k: v for k, v in sd.items()}
    obj = {"state_dict": sd, "epoch": 120, "best_acc": 0.77} if wrap == "state_dict" else sd
    path = tmp_path / "ref.pth"
    torch.save(obj, path)
    loaded = load_supernet(path, TINY)
    assert _same_weights(loaded, net)
    # and the in-memory entry point agrees
    assert _same_weights(load_reference_state_dict(Supernet(TINY), obj), net)


def test_remap_only_touches_reference_aliases():
    sd = {"module.blocks.1.mobile_inverted_conv.depth_conv.conv.conv.weight": 1,
          "first_conv.conv.weight": 2, "blocks.0.conv.point_linear.conv.weight": 3}
    assert remap_reference_keys(sd) == {"blocks.1.conv.depth_conv.conv.conv.weight": 1,
                                        "first_conv.conv.weight": 2,
                                        "blocks.0.conv.point_linear.conv.weight": 3}


def test_atomic_save_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "x.pt"
    atomic_torch_save({"a": torch.ones(1)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise pickle.PicklingError("nope")

    with pytest.raises(pickle.PicklingError):
        atomic_torch_save({"a": Unpicklable()}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(1))


def test_checkpoint_errors_are_user_errors():
    assert issubclass(CheckpointError, OfaDeployError)
    assert FORMAT_NAME == "ofa-deploy-supernet"
