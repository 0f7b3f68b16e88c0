"""PyTorch -> LiteRT (.tflite) conversion through litert-torch (optional extra ``tflite``).

litert-torch is imported only when a conversion is asked for, so everything else works without
it; a missing install is one clear error naming the extra to install.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import torch

from .errors import OfaDeployError, first_line

__all__ = ["TFLiteExportError", "export_tflite", "litert_torch_version", "quiet_native_output",
           "require_litert_torch"]


class TFLiteExportError(OfaDeployError):
    """litert-torch is missing, or it could not convert a model."""


def require_litert_torch():
    try:
        import litert_torch
    except ImportError as exc:
        raise TFLiteExportError(
            f"converting to .tflite needs litert-torch, which is not installed ({exc}); "
            f"install it with: pip install 'ofa-deploy[tflite]'") from None
    return litert_torch


def litert_torch_version() -> str | None:
    """Installed litert-torch version without importing it (importing it costs seconds)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("litert-torch")
    except PackageNotFoundError:
        return None


def _flush() -> None:
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass


@contextlib.contextmanager
def quiet_native_output() -> Iterator[Path]:
    """Silence litert-torch's progress console and the converter's C++ logging (written to
    the process's stdout/stderr file descriptors, so Python redirection cannot catch them);
    yields the file that collects them, for error messages.

    Process-wide state is put back on exit, also when the body raises: file descriptors 1 and 2
    point where they pointed before, and ``os.environ`` holds what it held (this sets
    ``LITERT_TORCH_SHOW_PROGRESS``, and importing the converter may set variables of its own)."""
    env_before = dict(os.environ)
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    log = tempfile.NamedTemporaryFile(prefix="ofa-litert-", suffix=".log", delete=False)
    saved = []
    _flush()
    try:
        for fd in (1, 2):
            try:
                dup = os.dup(fd)
            except OSError:  # no such descriptor (embedded interpreters): leave it
                continue
            saved.append((fd, dup))
            os.dup2(log.fileno(), fd)
        yield Path(log.name)
    finally:
        _flush()
        for fd, dup in saved:
            os.dup2(dup, fd)
            os.close(dup)
        log.close()
        _restore_environ(env_before)
        with contextlib.suppress(OSError):
            os.unlink(log.name)


def _restore_environ(before: dict) -> None:
    """Make ``os.environ`` equal ``before`` again (only the keys that differ are touched)."""
    for key in [k for k in os.environ if k not in before]:
        del os.environ[key]
    for key, value in before.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def export_tflite(model: torch.nn.Module, input_shape: Sequence[int], path: "str | os.PathLike",
                  *, quiet: bool = True) -> Path:
    """Convert ``model`` (eval mode, one float32 NCHW input of ``input_shape``) to ``path``,
    atomically. The .tflite keeps the NCHW interface; litert-torch moves the work inside to
    NHWC, which is what LiteRT's CPU kernels (XNNPACK) run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    sample = (torch.zeros(tuple(int(s) for s in input_shape)),)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    ctx = quiet_native_output() if quiet else contextlib.nullcontext(None)
    try:
        with ctx as log, torch.no_grad():
            lt = require_litert_torch()  # importing it logs too: inside the quiet block
            try:
                edge = lt.convert(model, sample)
                edge.export(str(tmp))
            except Exception as exc:
                detail = ""
                if log is not None:
                    tail = [ln for ln in Path(log).read_text(errors="replace").splitlines()
                            if ln.strip()][-1:]
                    detail = f" ({first_line(tail[0], 200)})" if tail else ""
                raise TFLiteExportError(f"litert-torch could not convert the model: "
                                        f"{first_line(exc)}{detail}") from None
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
