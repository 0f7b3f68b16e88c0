"""Elastic OFA supernets: spaces, archs, elastic layers, subnet extraction, cost, checkpoints."""
from .arch import ArchConfig, ArchError
from .checkpoint import CheckpointError, load_supernet, save_supernet
from .cost import arch_cost, arch_macs, arch_params, space_stats, supernet_params
from .model import Subnet, Supernet, build_supernet, extract_subnet
from .ops import OpKey, arch_ops, enumerate_ops
from .errors import OfaDeployError
from .space import (
    FAMILIES, Family, SpaceError, SPACES, Space, get_family, get_space, list_spaces, make_divisible,
    register_family, register_space,
)
from . import proxyless  # noqa: F401  (registers the ProxylessNAS family and its spaces)

__all__ = [
    "OfaDeployError", "SpaceError",
    "ArchConfig", "ArchError", "CheckpointError", "load_supernet", "save_supernet",
    "arch_cost", "arch_macs", "arch_params", "space_stats", "supernet_params",
    "Subnet", "Supernet", "build_supernet", "extract_subnet",
    "OpKey", "arch_ops", "enumerate_ops",
    "SPACES", "Space", "get_space", "list_spaces", "make_divisible", "register_space",
    "FAMILIES", "Family", "get_family", "register_family",
]
