"""Helpers every command shares: ``--config`` defaults, resolved-config files, tables and ``--json``."""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import click

from supernet.errors import OfaDeployError
from supernet.fileio import atomic_write_text  # noqa: F401  (re-exported for commands)
from supernet.fileio import read_yaml

# -- shared helpers for commands -------------------------------------------------------------
def flag_name(param: click.Parameter) -> str:
    """The name a user types for ``param``: its first long flag without dashes (``--ms`` ->
    ``ms``, ``--calib-images`` -> ``calib-images``), else its parameter name."""
    for opt in getattr(param, "opts", []):
        if opt.startswith("--"):
            return opt[2:]
    return param.name


def _config_keys(command: click.Command) -> dict:
    """Every key a ``--config`` file may use -> its parameter: the flags' names (what users
    type, and what ``config.yaml`` files are written with) and, for files written before the
    flags' names were used, the internal parameter names. ``-`` and ``_`` are the same."""
    keys = {}
    for p in command.params:
        if not isinstance(p, click.Option):
            continue
        keys.setdefault(p.name, p)
        for opt in p.opts + p.secondary_opts:
            if opt.startswith("--"):
                keys[opt[2:].replace("-", "_")] = p
    return keys


def _example_key(command: click.Command) -> str:
    names = [flag_name(p) for p in command.params
             if isinstance(p, click.Option) and p.name not in ("config", "help")]
    return names[0] if names else "option"


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None):
    """``--config FILE.yaml``: its keys become the command's defaults (defaults < file < flags)."""
    if not value:
        return value
    data = read_yaml(value, "config file",
                     lambda msg: click.BadParameter(msg, param_hint="--config")) or {}
    if not isinstance(data, Mapping):
        raise click.BadParameter(f"{value} must hold a mapping of option names to values",
                                 param_hint="--config")
    params = _config_keys(ctx.command)
    cfg = {}
    for key, val in data.items():
        param = params.get(str(key).replace("-", "_"))
        if param is None or param.name == "config":
            raise click.BadParameter(f"{value}: unknown option {key!r} for "
                                     f"'{ctx.command.name}' (use the flags' names, e.g. "
                                     f"{_example_key(ctx.command)!r})", param_hint="--config")
        if getattr(param, "multiple", False) and not isinstance(val, (list, tuple)):
            val = [val]  # `ms: 30` for a repeatable flag means one value
        cfg[param.name] = val
    ctx.default_map = {**(ctx.default_map or {}), **cfg}
    return value


def config_option(fn: Callable) -> Callable:
    """Decorator adding ``--config FILE`` to a command: the YAML file's keys (the flags' names,
    e.g. ``ms: 30``, ``target: cpu``) become option defaults before the other options are
    parsed, so flags given on the line win; unknown keys are a usage error."""
    return click.option("--config", type=click.Path(dir_okay=False), callback=_load_config,
                        is_eager=True, expose_value=False,
                        help="YAML file of option values (flags given on the line win).")(fn)


def resolved_config(ctx: click.Context) -> dict:
    """Every option value of the running command after defaults, ``--config`` and the command
    line, keyed by the flags' names (so the file feeds ``--config``)."""
    by_name = {p.name: p for p in ctx.command.params}
    return {flag_name(by_name[k]) if k in by_name else k: v for k, v in ctx.params.items()}


def save_resolved_config(ctx: click.Context, out_dir: "str | os.PathLike") -> Path:
    """Write the options this run used to ``OUT/config.yaml`` (atomically)."""
    import yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    data = {k: (list(v) if isinstance(v, tuple) else v) for k, v in resolved_config(ctx).items()}
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=True))
    return path


def output_path_problem(path: "str | os.PathLike", kind: str = "file") -> "str | None":
    """Why ``path`` cannot be written as a ``kind`` ("file" or "dir") output, or None.

    Checked before any work starts, so a bad ``--out`` costs a second, not a run: an existing
    path of the other kind, a path under a file, a folder this user cannot create files in
    (found by creating and removing a probe file, which also catches read-only and virtual
    file systems such as /proc, where permission bits say nothing).
    """
    p = Path(path)
    if p.exists():
        if kind == "file" and p.is_dir():
            return f"{path} is a directory (give a file name)"
        if kind == "dir" and not p.is_dir():
            return f"{path} exists and is not a directory"
        if kind == "file" and not os.access(p, os.W_OK):
            return f"{path} is not writable"
    anc = p if (kind == "dir" and p.is_dir()) else p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        return f"{path} is under {anc}, which is a file"
    try:
        fd, probe = tempfile.mkstemp(dir=anc, prefix=".ofa-deploy-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot create files in {anc}: {exc.strerror or exc}"
    return None


class OutputPath(click.ParamType):
    """A ``click`` type for output files/folders: :func:`output_path_problem` at parse time."""

    name = "path"

    def __init__(self, kind: str = "file"):
        self.kind = kind

    def convert(self, value, param, ctx):
        """The path itself, or a usage error naming why it cannot be written."""
        problem = output_path_problem(value, self.kind)
        if problem:
            self.fail(problem, param, ctx)
        return os.fspath(value)


def given_flags(**flags: Any) -> dict:
    """The flags given on the command line (None: not given, so the library's default holds),
    e.g. the search settings passed on to ``EvolutionConfig``."""
    return {k: v for k, v in flags.items() if v is not None}


def check_positive(value: "float | None", flag: str) -> None:
    """Budgets are positive, finite numbers; anything else is a usage error naming the flag."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be positive and finite, got {value:g}",
                                 param_hint=flag)


INCOMPLETE = "INCOMPLETE.txt"


@contextlib.contextmanager
def output_dir_guard(out_dir: "str | os.PathLike"):
    """Leave no half-made output folder behind: if the body fails (or is interrupted), a
    folder this run created is removed; a folder that already existed gets ``INCOMPLETE.txt``
    saying that this run failed and why (its other files may be from the failed run)."""
    out = Path(out_dir)
    existed = out.exists()
    with contextlib.suppress(OSError):
        (out / INCOMPLETE).unlink()
    try:
        yield out
    except BaseException as exc:
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
        elif out.is_dir():
            with contextlib.suppress(OSError):
                (out / INCOMPLETE).write_text(
                    f"This run failed; files here may be from it and incomplete.\n"
                    f"{type(exc).__name__}: {exc}\n", encoding="utf-8")
        raise


PRECISION_CHOICES = ("fp32", "int8", "fp16")


def precision_option(help: str, default: "str | None" = None) -> Callable:
    """``--precision fp32|int8|fp16`` (case-insensitive), the same choice on every command."""
    return click.option("--precision", default=default, show_default=default is not None,
                        type=click.Choice(PRECISION_CHOICES, case_sensitive=False), help=help)


# profilers.protocol.ESTIMATORS, spelled out: importing it loads numpy, and `--help` must stay
# instant (tests/ofa_deploy/test_cli_layout.py checks the two tuples are the same).
ESTIMATOR_CHOICES = ("median-pooled", "best-round-median")


def estimator_option(default_help: str) -> Callable:
    """``--estimator median-pooled|best-round-median``, the same choice on every command that
    measures; ``default_help`` says what it is when omitted (the value is then None)."""
    return click.option(
        "--estimator", default=None, type=click.Choice(ESTIMATOR_CHOICES),
        help=f"How runs become one latency: median-pooled (median of every run of every "
             f"round: what an app on a shared machine sees) or best-round-median (lowest "
             f"round median: the uncontended speed a dedicated device sees). {default_help}")


def emit(data: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    """``--json`` prints machine-readable JSON; otherwise a table for people."""
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=False))
    else:
        click.echo(human(data))


def table(rows: Iterable[Iterable[Any]], headers: Iterable[str]) -> str:
    """``rows`` as a plain-text table under ``headers``: left-aligned columns as wide as their
    widest cell, a dashed rule under the headers."""
    rows = [[str(c) for c in r] for r in rows]
    headers = [str(h) for h in headers]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])

DATA_HELP = ("fashion-mnist[:DIR] (Debian package dataset-fashion-mnist), imagefolder:PATH "
             "(train/ and val/ class folders) or synthetic.")


def torch_device(name: str) -> str:
    """``--device auto|cpu|cuda|cuda:N`` checked against what this machine has."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine", param_hint="--device")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise click.BadParameter(f"{name!r}: use auto, cpu, cuda or cuda:N", param_hint="--device")
    return name


def load_data(spec: str | None, supernet_name: str, echo):
    """The dataset of ``--data`` if given; for the bundled default, Fashion-MNIST when it is installed."""
    from supernet.training.data import DataError, load_dataset

    if spec == "none":
        return None
    if spec is None:
        if supernet_name != "default":
            return None
        try:
            return load_dataset("fashion-mnist")
        except DataError as exc:
            echo(f"warning: {exc} -- continuing without data (no BN calibration, no accuracy)")
            return None
    return load_dataset(spec)


def load_predictor_for(path, fmt, space):
    """``--predictor`` if given, else the predictor bundled for the space (clear error if none)."""
    from ..predictor_files import bundled_predictor_path, load_predictor

    if path is None:
        path = bundled_predictor_path(space)
        if path is None:
            raise OfaDeployError(f"no accuracy predictor is bundled for space {space.name}: pass "
                                 f"--predictor FILE (train one with `ofa-deploy predictor "
                                 f"collect` then `ofa-deploy predictor train`)")
    return load_predictor(path, space, format=fmt)
