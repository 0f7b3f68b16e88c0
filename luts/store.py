"""Where latency tables live: the cache directory, the built-in tables, and how a name
given on the command line (``note10``, a file, a device spec) finds its table."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Dict

from profilers.base import DeviceSpec, DeviceSpecError
from supernet.op_families import all_space_names, resolve_space
from supernet.space import Space

from .table import LatencyTable, LUTError, _parse_precision, check_precision

__all__ = ["BUILTIN_TABLES", "builtin_table_path", "cache_dir", "default_lut_path", "load_table"]

# Built-in target name -> file shipped inside this package (relative to luts/).
BUILTIN_TABLES: Dict[str, str] = {
    "note10": "luts/tables/note10-ofa-mbv3-w1.2.json",
}


def cache_dir() -> Path:
    """``$OFA_DEPLOY_HOME``, else the platform's user cache directory + ``ofa-deploy``."""
    env = os.environ.get("OFA_DEPLOY_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "ofa-deploy"
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "ofa-deploy" / "Cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ofa-deploy"


def _device_slug(device: "DeviceSpec | str") -> str:
    if isinstance(device, DeviceSpec):
        return device.slug
    try:
        return DeviceSpec.parse(device).slug
    except DeviceSpecError:
        return re.sub(r"[^A-Za-z0-9_.\-]+", "-", str(device)).strip("-") or "device"


def default_lut_path(device: "DeviceSpec | str", space_name: "str | Space",
                     precision: str = "fp32") -> Path:
    """``cache_dir()/luts/<device slug>/<space>.json`` (fp32, the name tables always had) or
    ``<space>-int8.json`` / ``<space>-fp16.json``: one device keeps a table of each precision
    side by side."""
    name = str(getattr(space_name, "name", space_name))  # a space record of any family
    suffix = "" if _parse_precision(precision) == "fp32" else f"-{precision}"
    return cache_dir() / "luts" / _device_slug(device) / f"{name}{suffix}.json"


def builtin_table_path(name: str) -> Path:
    """The file of the built-in table ``name`` (e.g. ``note10``); an unknown name is a LUTError
    listing the built-ins."""
    try:
        rel = BUILTIN_TABLES[name]
    except KeyError:
        raise LUTError(f"unknown built-in latency table {name!r}; built-in: "
                       f"{', '.join(BUILTIN_TABLES)}") from None
    # entries are written relative to the project root (luts/...); this module is luts/store.py
    return Path(__file__).resolve().parent.parent / rel


def _check_space(t: LatencyTable, space) -> LatencyTable:
    if space is not None:
        want = resolve_space(space)[1].name
        if t.space.name != want:
            raise LUTError(f"latency table ({t._describe()}) is for space {t.space.name}, not "
                           f"{want}")
    return t


def load_table(name_or_path: "str | os.PathLike", *, space: "Space | str | None" = None,
               precision: "str | None" = None, what: str = "the target") -> LatencyTable:
    """A built-in target name (``note10``), a table file, or a device spec (``cpu``,
    ``adb:pixel``...) whose profiled table exists at :func:`default_lut_path`.

    ``precision`` (``"fp32"``/``"int8"``): the precision the caller prices; a device spec then
    finds that precision's table, and a file or built-in of the other precision is a one-line
    LUTError (:func:`~luts.table.check_precision`, naming ``what``). None: any precision
    (a device spec then finds the fp32 table)."""
    t = _find_table(name_or_path, space, precision)
    return check_precision(t, precision, what=what)


def _find_table(name_or_path, space, precision) -> LatencyTable:
    text = str(name_or_path)
    if text in BUILTIN_TABLES:
        return _check_space(LatencyTable.load(builtin_table_path(text)), space)
    p = Path(text).expanduser()
    if p.is_file() or p.is_dir():
        return _check_space(LatencyTable.load(p), space)
    prec = "fp32" if precision is None else _parse_precision(precision)
    flag = "" if prec == "fp32" else f" --precision {prec}"
    if text.endswith(".json") or os.sep in text or "/" in text:
        raise LUTError(f"latency table not found: {text}")
    try:
        dev = DeviceSpec.parse(text)
    except DeviceSpecError:
        raise LUTError(f"{text!r} is not a latency table file, a built-in table "
                       f"({', '.join(BUILTIN_TABLES)}) or a device spec (cpu, tflite:cpu, "
                       f"cuda:0, adb:NAME)") from None
    if space is not None:
        sp = resolve_space(space)[1].name
        path = default_lut_path(dev, sp, prec)
        if path.is_file():
            return _check_space(LatencyTable.load(path), sp)
        raise LUTError(f"no {prec} latency table for device {dev} and space {sp} (looked for "
                       f"{path}); build it with `ofa-deploy profile --device {dev} --space "
                       f"{sp}{flag}`")
    found = [(n, default_lut_path(dev, n, prec)) for n in all_space_names()]
    found = [(n, pth) for n, pth in found if pth.is_file()]
    if len(found) == 1:
        return LatencyTable.load(found[0][1])
    if not found:
        raise LUTError(f"no {prec} latency table for device {dev} (looked in "
                       f"{cache_dir() / 'luts' / dev.slug}); build one with "
                       f"`ofa-deploy profile --device {dev} --space SPACE{flag}`")
    raise LUTError(f"device {dev} has tables for several spaces "
                   f"({', '.join(n for n, _ in found)}); choose one with --space")
