"""``export``: any subnet as model.onnx / model.tflite plus model.json metadata."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import OutputPath, atomic_write_text, emit, load_data, output_dir_guard, table


@click.command("export")
@click.option("--supernet", "supernet_name", default="default", show_default=True,
              help="Checkpoint path or registered name.")
@click.option("--space", "space_name", default=None,
              help="Space of a reference-layout checkpoint (ours record it).")
@click.option("--arch", required=True, metavar="FILE|min|max|STRING",
              help="The subnet: JSON file (e.g. a report.json), compact string, min or max.")
@click.option("--format", "formats", default="onnx,tflite", show_default=True,
              help="Comma list of onnx, tflite.")
@click.option("--data", "data_spec", default=None,
              help="Data for BN calibration (default: Fashion-MNIST for the bundled default; "
                   "'none' to skip).")
@click.option("--calib-images", default=2000, show_default=True, type=click.IntRange(1))
@click.option("--out", "out_dir", default="runs/export", show_default=True,
              type=OutputPath("dir"))
@click.option("--json", "as_json", is_flag=True)
def export_cmd(supernet_name, space_name, arch, formats, data_spec, calib_images, out_dir,
               as_json) -> None:
    """Export any subnet as model.onnx / model.tflite (each checked against torch) plus
    model.json metadata (arch, params, MACs, sizes, hashes)."""
    from supernet import ArchConfig
    from supernet.checkpoint import load_supernet

    from supernet.bn import calibrate_bn, calibration_batches
    from supernet import extract_subnet

    from ..export import export_artifacts, parse_formats
    from ..report import round_floats
    from ..specialize import subnet_metadata

    fmts = parse_formats(formats)
    net = load_supernet(supernet_name, space_name).eval()
    a = ArchConfig.parse(arch, net.space)
    sub = extract_subnet(net, a).eval()
    ds = load_data(data_spec, supernet_name, lambda s: click.echo(s, err=True))
    if ds is not None:
        calibrate_bn(sub, calibration_batches(ds.holdout, a.r, calib_images, 200,
                                              channels_last=False))
    with output_dir_guard(out_dir):
        arts = export_artifacts(sub, (1, 3, a.r, a.r), out_dir, fmts)
        meta = subnet_metadata(net.space, a, arts, supernet=str(supernet_name),
                               bn_calibrated=ds is not None)
        meta = round_floats(meta)
        atomic_write_text(Path(out_dir) / "model.json", json.dumps(meta, indent=2))
    emit(meta, as_json, lambda m: table(
        [(f, v["path"], f"{v['bytes']:,}", f"{v['max_abs_diff']:.2e}") for f, v in m["files"].items()],
        ("format", "file", "bytes", "max |diff| vs torch")) +
        f"\narch {m['arch_string']}: {m['params']:,} params, {m['macs'] / 1e6:.1f}M MACs")
