"""The ``ofa-deploy`` command line: one click group; each command lives in its own module."""
from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import click
import yaml

from supernet.errors import OfaDeployError
from supernet.fileio import atomic_write_text  # noqa: F401  (re-exported for commands)

from . import __version__

# Modules that add commands to ``main`` (each imports ``main`` from here and decorates).
COMMAND_MODULES = [
    "ofa_deploy.cmd_specialize",
    "ofa_deploy.cmd_predictor",
    "ofa_deploy.cmd_spaces",
    "ofa_deploy.cmd_lut",
    "ofa_deploy.cmd_bench",
    "ofa_deploy.cmd_train",
    "ofa_deploy.cmd_search",
    "ofa_deploy.cmd_profile",
    "ofa_deploy.cmd_lut_validate",
]


class OfaGroup(click.Group):
    """Turns every user-caused error into one line and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OfaDeployError as exc:
            raise click.ClickException(str(exc)) from None
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            raise click.ClickException(f"{exc.strerror}: {exc.filename}") from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=OfaGroup, context_settings={"help_option_names": ["-h", "--help"],
                                             "max_content_width": 100})
@click.version_option(__version__, prog_name="ofa-deploy")
def main() -> None:
    """Once-for-All deployment: one elastic supernet, a subnet per device, no retraining.

    \b
    Typical flow:
      ofa-deploy spaces                                # what can be searched
      ofa-deploy inspect --space ofa-mbv3-w1.0 --arch max --json
      ofa-deploy profile --device cpu --space ofa-mbv3-tiny     # latency table
      ofa-deploy specialize --target cpu --ms 15       # search + export + report

    Every command takes --help. Errors are reported in one line with a non-zero exit.
    """


# -- shared helpers for commands -------------------------------------------------------------
def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None):
    """``--config FILE.yaml``: its keys become the command's defaults (defaults < file < flags)."""
    if not value:
        return value
    path = Path(value)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise click.BadParameter(f"cannot read {value}: {exc.strerror}", param_hint="--config")
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"{value} is not valid YAML: {str(exc).splitlines()[0]}",
                                 param_hint="--config")
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
    return click.option("--config", type=click.Path(dir_okay=False), callback=_load_config,
                        is_eager=True, expose_value=False,
                        help="YAML file of option values (flags given on the line win).")(fn)


def resolved_config(ctx: click.Context) -> dict:
    return {k: v for k, v in ctx.params.items()}


def save_resolved_config(ctx: click.Context, out_dir: "str | os.PathLike") -> Path:
    """Write the options this run used to ``OUT/config.yaml`` (atomically)."""
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
    rows = [[str(c) for c in r] for r in rows]
    headers = [str(h) for h in headers]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


for _mod in COMMAND_MODULES:
    importlib.import_module(_mod)
