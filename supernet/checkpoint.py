"""Checkpoints: the reference OFA layout in, our own format (with metadata) in and out."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Dict, Mapping

import torch

from .errors import OfaDeployError, first_line
from .fileio import atomic_write_bytes
from .model import Supernet
from .space import Space, get_space
from .training.state import supernet_weights

__all__ = [
    "CheckpointError",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "save_supernet",
    "load_supernet",
    "load_state_dict_file",
    "remap_reference_keys",
    "load_reference_state_dict",
    "register_supernet",
    "SUPERNETS",
    "atomic_torch_save",
]

FORMAT_NAME = "ofa-deploy-supernet"
FORMAT_VERSION = 1


class CheckpointError(OfaDeployError, ValueError):
    """A checkpoint that cannot be read or does not fit its network; the message says why."""


# Named supernets shipped with (or registered into) the package: name -> callable returning a
# path. The trainer issue registers "default" here.
SUPERNETS: Dict[str, callable] = {}


def register_supernet(name: str, path_fn) -> None:
    """Make ``name`` usable wherever a checkpoint path is accepted; ``path_fn()`` is called only
    when the name is resolved, so it may download or locate the file lazily."""
    SUPERNETS[name] = path_fn


def atomic_torch_save(obj, path: "str | os.PathLike") -> None:
    """``torch.save`` through a temp file and a rename: a kill never leaves half a file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state_dict_file(path: "str | os.PathLike") -> dict:
    """``torch.load`` with ``weights_only=True`` and errors that name the file."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        with open(p, "rb") as fh:
            data = fh.read()
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        # torch's first sentence names the problem; what follows is advice for its developers
        # (cut mid-sentence at 200 characters it read as a broken message)
        first = first_line(exc, 0).split(". ")[0].rstrip(".")
        if len(first) > 200:
            first = first[:200].rsplit(" ", 1)[0] + " ..."
        raise CheckpointError(f"cannot read checkpoint {p}: {first} (is the file complete? "
                              f"a truncated or partly copied file reads like this)") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {p} holds a {type(obj).__name__}, not a dict")
    return dict(obj)


def remap_reference_keys(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Reference layout -> ours. Our module names are the reference's, so only the legacy
    ``mobile_inverted_conv`` alias and a DataParallel ``module.`` prefix need rewriting."""
    out = {}
    for k, v in state.items():
        nk = k[len("module."):] if k.startswith("module.") else k
        nk = nk.replace(".mobile_inverted_conv.", ".conv.")
        out[nk] = v
    return out


def _check_and_load(net: Supernet, state: Mapping[str, torch.Tensor], source: str) -> None:
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:3])})")
        if shape:
            parts.append(f"{len(shape)} shape mismatch(es) (e.g. {'; '.join(shape[:2])})")
        raise CheckpointError(f"{source} does not fit space {net.space.name}: " + "; ".join(parts))
    net.load_state_dict(state, strict=True)


def load_reference_state_dict(net: Supernet, state: Mapping, source: str = "state_dict") -> Supernet:
    """Load a reference-layout state_dict (optionally wrapped as ``{"state_dict": ...}``)."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source} holds no tensors")
    _check_and_load(net, remap_reference_keys(tensors), source)
    return net


def save_supernet(net: Supernet, path: "str | os.PathLike", *, half: bool = False,
                  metadata: Mapping | None = None) -> None:
    """Write ``net`` atomically as an ofa-deploy checkpoint (format, version, space name and config,
    ``metadata``, weights); ``half`` stores floating tensors as fp16 to halve the file, and
    loading casts them back."""
    sd = net.state_dict()
    if half:  # fp16 storage to keep shipped weights small; loading casts back to fp32
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    atomic_torch_save({
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "space": net.space.name,
        "space_config": net.space.get_state(),
        "metadata": dict(metadata or {}),
        "state_dict": sd,
    }, path)


def resolve_supernet_path(name_or_path: "str | os.PathLike") -> Path:
    """The file for a registered supernet name or an existing path; raises :class:`CheckpointError`
    listing the registered names when it is neither."""
    s = str(name_or_path)
    if s in SUPERNETS:
        return Path(SUPERNETS[s]())
    p = Path(s)
    if not p.exists():
        known = ", ".join(sorted(SUPERNETS)) or "none registered"
        raise CheckpointError(f"no checkpoint file {s!r} and no registered supernet of that name "
                              f"(registered: {known})")
    return p


def load_supernet(name_or_path: "str | os.PathLike", space: "Space | str | None" = None,
                  ) -> Supernet:
    """Load our checkpoints (space read from them) or reference ones (``space`` required)."""
    path = resolve_supernet_path(name_or_path)
    obj = load_state_dict_file(path)
    trained = supernet_weights(obj)
    if trained is not None:
        # a run's checkpoint.pt: evaluate (or export) a supernet while it is still training
        obj = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
               "space": trained.space, "space_config": None,
               "metadata": {"from_training_checkpoint": trained.position},
               "state_dict": trained.state_dict}
    if obj.get("format") == FORMAT_NAME:
        ver = obj.get("format_version")
        if not isinstance(ver, int) or ver > FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format version {ver!r} is newer than this "
                                  f"ofa-deploy understands ({FORMAT_VERSION})")
        name = obj.get("space")
        try:
            sp = get_space(space) if space is not None else get_space(name)
        except KeyError:
            if space is not None:  # a mistyped --space must not be silently ignored
                raise
            try:
                sp = Space.from_state(obj["space_config"])
            except Exception as exc:
                raise CheckpointError(f"{path}: unknown space {name!r} and unreadable space "
                                      f"config ({exc})") from None
        if space is not None and sp.name != name:
            raise CheckpointError(f"{path} is a checkpoint of space {name}, not {sp.name}")
        net = Supernet(sp)
        state = {k: v.float() if v.is_floating_point() else v for k, v in obj["state_dict"].items()}
        _check_and_load(net, state, str(path))
        net.checkpoint_metadata = dict(obj.get("metadata") or {})
        return net
    if space is None:
        raise CheckpointError(f"{path} is a reference-layout checkpoint: name its space "
                              f"(e.g. --space ofa-mbv3-w1.0)")
    net = Supernet(get_space(space))
    return load_reference_state_dict(net, obj, str(path))


# The supernet bundled with the package: ofa-mbv3-tiny trained on Fashion-MNIST (fp16).
register_supernet("default", lambda: Path(__file__).resolve().parent / "assets"
                  / "default-ofa-mbv3-tiny.pt")
