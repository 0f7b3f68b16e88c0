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

__all__ = ["atomic_write_bytes", "atomic_write_text", "read_yaml", "sha256_file",
           "shared_file_mode", "utc_now"]


def shared_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0o666 less the umask (0644 with
    the usual umask 022). Temp files from :func:`tempfile.mkstemp` are 0600, which would make
    reports and models that users share unreadable to their colleagues.

    The umask is read from /proc (Linux); setting and restoring it with ``os.umask`` would be
    a process-wide side effect, racy with threads. Elsewhere 022 is assumed.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o644


def atomic_write_bytes(path: "str | os.PathLike", data: bytes, *,
                       mode: "int | None" = None) -> Path:
    """Write ``data`` to ``path`` (creating its directory) through an fsynced temp file in the
    same directory and ``os.replace``, so readers and a kill see the old file or the new one,
    never half; returns ``path``.

    ``mode``: the file's permissions; default :func:`shared_file_mode` (0644). Secrets pass
    0o600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, shared_file_mode() if mode is None else mode)
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


def atomic_write_text(path: "str | os.PathLike", text: str, *, mode: "int | None" = None) -> Path:
    """UTF-8 text through :func:`atomic_write_bytes`; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


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
