"""The Android device registry: names such as ``pixel`` in ``adb:pixel`` -> how to reach the
phone and how to time on it.

The registry is a YAML mapping read from ``$OFA_DEPLOY_DEVICES`` if set, else
``$XDG_CONFIG_HOME/ofa-deploy/devices.yaml`` (``~/.config/ofa-deploy/devices.yaml``)::

    pixel:                        # USB phone, straight to its adbd (no adb server)
      transport: usb              # usb | tcp | server
      address: 1A2B3C4D5E         # usb: serial (optional); tcp: host:port; server: adb serial
      threads: 4
      affinity: f0                # optional taskset mask (big cores)
      benchmark_model: ~/bin/android_aarch64_benchmark_model
    pixel-wifi:
      transport: tcp
      address: 192.168.1.23:5555
      benchmark_model: ~/bin/android_aarch64_benchmark_model

Relative ``benchmark_model``/``key`` paths are relative to the registry file. Every bad field
is reported (in one message), naming the device and the field.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from supernet.errors import OfaDeployError
from supernet.fileio import read_yaml

__all__ = ["DeviceEntry", "DeviceRegistryError", "TRANSPORTS", "registry_path", "load_registry",
           "get_device", "default_key_path"]

TRANSPORTS = ("tcp", "usb", "server")
DEFAULT_WORK_DIR = "/data/local/tmp/ofa-deploy"
DEFAULT_SERVER = "127.0.0.1:5037"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")  # what DeviceSpec accepts after "adb:"
_HOSTPORT_RE = re.compile(r"^(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


class DeviceRegistryError(OfaDeployError, ValueError):
    """The device registry is missing, unreadable or has a bad entry."""


@dataclass(frozen=True)
class DeviceEntry:
    """One phone. Times are seconds; ``retries`` counts extra attempts after a transient error
    (dropped connection, timeout), spaced ``backoff_s * 2**attempt`` apart."""

    name: str
    transport: str
    benchmark_model: Path
    address: Optional[str] = None
    threads: int = 4
    affinity: Optional[str] = None
    work_dir: str = DEFAULT_WORK_DIR
    key: Optional[Path] = None
    server: str = DEFAULT_SERVER
    timeout_s: float = 120.0
    auth_timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 1.0
    batches: int = 5
    benchmark_args: Tuple[str, ...] = ("--use_xnnpack=true",)
    drift_tolerance: float = 0.10
    source: Optional[Path] = field(default=None, compare=False)

    @property
    def host_port(self) -> Tuple[str, int]:
        """``(host, port)`` of a tcp device (port 5555 when the address has none)."""
        addr = self.address or ""
        m = _HOSTPORT_RE.match(addr)
        if m:
            return m.group(1).strip("[]"), int(m.group(2))
        return addr, 5555

    @property
    def server_host_port(self) -> Tuple[str, int]:
        """Host and port of the adb server this entry uses (``[::1]:5037`` style addresses
        unbracketed)."""
        host, port = self.server.rsplit(":", 1)
        return host.strip("[]"), int(port)

    def to_dict(self) -> Dict[str, Any]:
        """The entry's settings as JSON-able values, as ``ofa-deploy devices --json`` shows them."""
        return {"name": self.name, "transport": self.transport, "address": self.address,
                "threads": self.threads, "affinity": self.affinity, "work_dir": self.work_dir,
                "benchmark_model": str(self.benchmark_model),
                "server": self.server if self.transport == "server" else None,
                "timeout_s": self.timeout_s, "retries": self.retries, "batches": self.batches,
                "benchmark_args": list(self.benchmark_args)}


def registry_path() -> Path:
    """Where the registry is read from (the file need not exist)."""
    env = os.environ.get("OFA_DEPLOY_DEVICES")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "ofa-deploy" / "devices.yaml"


def default_key_path() -> Path:
    """The adb private key adb itself uses: ``$OFA_DEPLOY_ADB_KEY``, else
    ``$ANDROID_USER_HOME/adbkey``, else ``~/.android/adbkey``."""
    env = os.environ.get("OFA_DEPLOY_ADB_KEY")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("ANDROID_USER_HOME")
    if home:
        return Path(home).expanduser() / "adbkey"
    return Path(os.path.expanduser("~")) / ".android" / "adbkey"


_FIELDS = ("transport", "address", "threads", "affinity", "benchmark_model", "work_dir", "key",
           "server", "timeout_s", "auth_timeout_s", "retries", "backoff_s", "batches",
           "benchmark_args", "drift_tolerance")


def _parse_entry(name: str, raw: Any, base: Path, errors: List[str]) -> Optional[DeviceEntry]:
    where = f"device {name!r}"

    def bad(fieldname: str, msg: str) -> None:
        errors.append(f"{where}: {fieldname}: {msg}")

    if not _NAME_RE.match(name):
        errors.append(f"{where}: name may use only letters, digits, '_', '.', '-' "
                      f"(it is used as adb:{name})")
    if not isinstance(raw, Mapping):
        errors.append(f"{where}: expected a mapping of fields, got {type(raw).__name__}")
        return None
    n_errors = len(errors)
    unknown = sorted(str(k) for k in raw if k not in _FIELDS)
    for k in unknown:
        bad(k, f"unknown field (known: {', '.join(_FIELDS)})")
    kw: Dict[str, Any] = {}

    transport = raw.get("transport")
    if transport not in TRANSPORTS:
        bad("transport", f"must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    kw["transport"] = transport

    address = raw.get("address")
    if address is not None and (not isinstance(address, (str, int)) or not str(address).strip()):
        bad("address", f"must be a non-empty string, got {address!r}")
        address = None
    address = None if address is None else str(address).strip()
    if transport == "tcp":
        if not address:
            bad("address", "tcp needs host:port, e.g. 192.168.1.23:5555")
        else:
            m = _HOSTPORT_RE.match(address)
            if ":" in address and not m:
                bad("address", f"expected host:port, got {address!r}")
            elif m and not 0 < int(m.group(2)) < 65536:
                bad("address", f"port out of range in {address!r}")
    if transport == "server" and not address:
        bad("address", "server needs the device's adb serial (see `adb devices`) or host:port")
    kw["address"] = address

    def integer(fieldname: str, default: int, lo: int) -> int:
        v = raw.get(fieldname, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            bad(fieldname, f"must be an integer >= {lo}, got {v!r}")
            return default
        return v

    def number(fieldname: str, default: float, lo: float) -> float:
        v = raw.get(fieldname, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > lo:
            bad(fieldname, f"must be a number > {lo:g}, got {v!r}")
            return default
        return float(v)

    kw["threads"] = integer("threads", 4, 1)
    kw["retries"] = integer("retries", 3, 0)
    kw["batches"] = integer("batches", 5, 1)
    kw["timeout_s"] = number("timeout_s", 120.0, 0)
    kw["auth_timeout_s"] = number("auth_timeout_s", 30.0, 0)
    kw["backoff_s"] = number("backoff_s", 1.0, -1e-12)
    kw["drift_tolerance"] = number("drift_tolerance", 0.10, 0)

    aff = raw.get("affinity")
    if aff is not None:
        text = format(aff, "x") if isinstance(aff, int) and not isinstance(aff, bool) else aff
        if not isinstance(text, str) or not re.fullmatch(r"(0x)?[0-9A-Fa-f]+", text) \
                or int(text, 16) == 0:
            bad("affinity", f"must be a non-zero hex CPU mask such as f0, got {aff!r}")
            text = None
        aff = None if text is None else text.lower().removeprefix("0x")
    kw["affinity"] = aff

    bm = raw.get("benchmark_model")
    if not isinstance(bm, str) or not bm.strip():
        bad("benchmark_model", "path of TFLite's benchmark_model binary for this phone's ABI is "
                               "required (e.g. android_aarch64_benchmark_model)")
        kw["benchmark_model"] = Path()
    else:
        kw["benchmark_model"] = (base / Path(bm).expanduser())

    wd = raw.get("work_dir", DEFAULT_WORK_DIR)
    if not isinstance(wd, str) or not wd.startswith("/") or "\n" in wd or "\0" in wd \
            or wd.rstrip("/") == "":
        bad("work_dir", f"must be an absolute path on the phone, got {wd!r}")
        wd = DEFAULT_WORK_DIR
    kw["work_dir"] = wd.rstrip("/")

    key = raw.get("key")
    if key is not None and (not isinstance(key, str) or not key.strip()):
        bad("key", f"must be the path of an adb private key, got {key!r}")
        key = None
    kw["key"] = None if key is None else base / Path(key).expanduser()

    server = raw.get("server", DEFAULT_SERVER)
    if not isinstance(server, str) or not _HOSTPORT_RE.match(server):
        bad("server", f"must be the adb server's host:port, got {server!r}")
        server = DEFAULT_SERVER
    kw["server"] = server

    args = raw.get("benchmark_args", ["--use_xnnpack=true"])
    if isinstance(args, str):
        args = args.split()
    if not isinstance(args, (list, tuple)) or not all(isinstance(a, str) and a.startswith("--")
                                                       for a in args):
        bad("benchmark_args", f"must be a list of --flag=value strings, got {args!r}")
        args = []
    kw["benchmark_args"] = tuple(args)

    if len(errors) > n_errors:
        return None
    return DeviceEntry(name=name, source=base, **kw)


def load_registry(path: "str | os.PathLike | None" = None) -> Dict[str, DeviceEntry]:
    """Every device in the registry (``path`` overrides :func:`registry_path`)."""
    p = Path(path).expanduser() if path is not None else registry_path()
    data = read_yaml(p, "device registry", DeviceRegistryError, missing=(
        f"no device registry at {p}: create it (see the README, 'Android phones') or point "
        f"OFA_DEPLOY_DEVICES at one"))
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise DeviceRegistryError(f"{p} must map device names to settings, "
                                  f"got {type(data).__name__}")
    errors: List[str] = []
    out: Dict[str, DeviceEntry] = {}
    base = p.resolve().parent
    for name, raw in data.items():
        entry = _parse_entry(str(name), raw, base, errors)
        if entry is not None:
            out[entry.name] = entry
    if errors:
        raise DeviceRegistryError(f"bad device registry {p}: " + "; ".join(errors))
    return out


def get_device(name: str, path: "str | os.PathLike | None" = None) -> DeviceEntry:
    """The registry entry called ``name``; an unknown name lists the registered ones."""
    devices = load_registry(path)
    if name not in devices:
        p = Path(path) if path is not None else registry_path()
        known = ", ".join(sorted(devices)) or "none"
        raise DeviceRegistryError(f"unknown device {name!r} in {p}; registered: {known}")
    return devices[name]
