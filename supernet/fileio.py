"""Small file helpers every package shares: atomic writes, content hashes, timestamps, YAML.

Everything long-running in ofa-deploy writes through a temp file in the target directory and
``os.replace``, so a kill leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import first_line

__all__ = ["atomic_write_bytes", "atomic_write_text", "read_yaml", "sha256_file", "utc_now"]


def atomic_write_bytes(path: "str | os.PathLike", data: bytes) -> Path:
    """Write ``data`` to ``path`` (creating its directory) through an fsynced temp file in the same
    directory and ``os.replace``, so readers and a kill see the old file or the new one, never
    half; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: "str | os.PathLike", text: str) -> Path:
    """UTF-8 text through :func:`atomic_write_bytes`; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: "str | os.PathLike") -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB chunks so large checkpoints do not fill
    memory."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def utc_now() -> str:
    """The current UTC time to the second, ISO 8601 (``2026-01-31T12:00:00+00:00``): the
    timestamp every written report and table carries."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_yaml(path: "str | os.PathLike", what: str, error: Callable[[str], Exception], *,
              missing: Optional[str] = None) -> Any:
    """The parsed content of a YAML file (None when it is empty). Every failure is one line
    raised as ``error(message)``: ``cannot read {what} {path}: <reason>`` (``missing`` instead,
    when given, for a file that does not exist, so a caller can say how to create it) and
    ``{what} {path} is not valid YAML: <the parser's first line>``."""
    import yaml  # only the commands that read YAML pay for the import

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise error(missing or f"cannot read {what} {p}: {exc.strerror}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise error(f"cannot read {what} {p}: {reason}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{what} {p} is not valid YAML: {first_line(exc)}") from None
