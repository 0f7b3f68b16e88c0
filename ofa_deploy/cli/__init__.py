"""The ``ofa-deploy`` command line: one click group, one module per command (or command group).

Commands are registered here explicitly, in the order ``--help`` lists them. Command modules import
only click at module level; the heavy libraries (torch, onnx, the runtimes) are imported inside the
command bodies, so ``ofa-deploy --help`` and the torch-free commands start fast.
"""
from __future__ import annotations

import sys
from typing import Any

import click

from supernet.errors import OfaDeployError

from .. import __version__
from .bench import bench
from .devices import devices
from .eval import eval_cmd
from .export import export_cmd
from .inspect import inspect
from .lut import lut
from .lut_calibrate import calibrate, predict as lut_predict
from .lut_validate import validate
from .predictor import predictor
from .profile import profile
from .search import search
from .spaces import spaces
from .specialize import specialize
from .train import train


class OfaGroup(click.Group):
    """Turns every user-caused error into one line and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; an :class:`OfaDeployError` (exit code of its kind: 2 for a
        malformed value, else 1) or any OS error becomes a one-line ClickException, and Ctrl-C
        exits 130 after printing ``interrupted``."""
        try:
            return super().invoke(ctx)
        except OfaDeployError as exc:
            err = click.ClickException(str(exc))
            err.exit_code = getattr(exc, "exit_code", 1)  # 2: a malformed value, as click's
            raise err from None
        except OSError as exc:  # every OS error: one line, never a traceback
            where = f": {exc.filename}" if exc.filename else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from None
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


lut.add_command(validate)
lut.add_command(calibrate)
lut.add_command(lut_predict)
for _command in (specialize, predictor, spaces, inspect, lut, bench, devices, train, eval_cmd,
                 search, profile, export_cmd):
    main.add_command(_command)

__all__ = ["main", "OfaGroup"]
