"""Helpers every command shares: ``--config`` defaults, resolved-config files, tables and ``--json``."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import click

from supernet.errors import OfaDeployError
from supernet.fileio import atomic_write_text  # noqa: F401  (re-exported for commands)
from supernet.fileio import read_yaml

# -- shared helpers for commands -------------------------------------------------------------
def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None):
    """``--config FILE.yaml``: its keys become the command's defaults (defaults < file < flags)."""
    if not value:
        return value
    data = read_yaml(value, "config file",
                     lambda msg: click.BadParameter(msg, param_hint="--config")) or {}
    if not isinstance(data, Mapping):
        raise click.BadParameter(f"{value} must hold a mapping of option names to values",
                                 param_hint="--config")
    names = {p.name for p in ctx.command.params}
    cfg = {}
    for key, val in data.items():
        k = str(key).replace("-", "_")
        if k not in names or k == "config":
            raise click.BadParameter(f"{value}: unknown option {key!r} for "
                                     f"'{ctx.command.name}'", param_hint="--config")
        cfg[k] = val
    ctx.default_map = {**(ctx.default_map or {}), **cfg}
    return value


def config_option(fn: Callable) -> Callable:
    """Decorator adding ``--config FILE`` to a command: the YAML file's keys become option defaults
    before the other options are parsed, so flags given on the line win; unknown keys are a usage
    error."""
    return click.option("--config", type=click.Path(dir_okay=False), callback=_load_config,
                        is_eager=True, expose_value=False,
                        help="YAML file of option values (flags given on the line win).")(fn)


def resolved_config(ctx: click.Context) -> dict:
    """Every option value of the running command after defaults, ``--config`` and the command line,
    by parameter name (a copy)."""
    return {k: v for k, v in ctx.params.items()}


def save_resolved_config(ctx: click.Context, out_dir: "str | os.PathLike") -> Path:
    """Write the options this run used to ``OUT/config.yaml`` (atomically)."""
    import yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    data = {k: (list(v) if isinstance(v, tuple) else v) for k, v in resolved_config(ctx).items()}
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=True))
    return path


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
    from ..accuracy import bundled_predictor_path, load_predictor

    if path is None:
        path = bundled_predictor_path(space)
        if path is None:
            raise OfaDeployError(f"no accuracy predictor is bundled for space {space.name}: pass "
                                 f"--predictor FILE (train one with `ofa-deploy predictor "
                                 f"collect` then `ofa-deploy predictor train`)")
    return load_predictor(path, space, format=fmt)
