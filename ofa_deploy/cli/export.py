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
              help="The subnet: JSON file (e.g. a report.json), compact string, min, max, or "
                   "a reference net.config (file or directory; its space is recognised).")
@click.option("--format", "formats", default="onnx,tflite", show_default=True,
              help="Comma list of onnx, tflite.")
@click.option("--data", "data_spec", default=None,
              help="Data for BN calibration (default: Fashion-MNIST for the bundled default; "
                   "'none' to skip).")
@click.option("--calib-images", default=2000, show_default=True, type=click.IntRange(1),
              help="Held-out training images for BN re-calibration and int8 calibration.")
@click.option("--precision", default="fp32", show_default=True,
              type=click.Choice(["fp32", "int8", "fp16"], case_sensitive=False),
              help="int8: static post-training quantization (ONNX QDQ, onnxruntime's quantizer), "
                   "calibrated on --calib-images training images; needs --data. fp16: TFLite "
                   "only (fp16 weights; --format defaults to tflite; onnx is refused).")
@click.option("--out", "out_dir", default="runs/export", show_default=True,
              type=OutputPath("dir"))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def export_cmd(ctx, supernet_name, space_name, arch, formats, data_spec, calib_images, precision,
               out_dir, as_json) -> None:
    """Export any subnet as model.onnx / model.tflite (each checked against torch) plus
    model.json metadata (arch, params, MACs, sizes, hashes; for a net.config also its name,
    the directory's, and its path as source: `bench` labels the artifacts with that name).

    With --arch runs/X/report.json, the supernet, the precision and the BN calibration (data,
    images, order) recorded by `specialize` are used unless given here, so model.onnx comes out bit for bit
    the same as the one specialize wrote.
    """
    from supernet import ArchConfig, extract_subnet
    from supernet.bn import calibration_batches
    from supernet.checkpoint import load_supernet
    from supernet.net_config import net_config_file, net_config_space
    from supernet.quantize import QuantizeError, QuantSettings

    from ..export import export_artifacts, parse_formats, resnet_subnet_metadata
    from ..report import round_floats
    from ..specialize import calibrate_subnet, subnet_metadata

    echo = lambda s: click.echo(s, err=True)
    precision = precision.lower()
    given = lambda name: ctx.get_parameter_source(name) not in (
        click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP)
    rec = _specialize_record(arch)
    quant_images = None  # int8 calibration images: --calib-images unless a report says
    if rec is not None:
        if not given("supernet_name") and rec.get("supernet"):
            supernet_name = rec["supernet"]
        calib = rec.get("bn_calibration")
        if not given("data_spec"):
            data_spec = "none" if calib is None else calib.get("data") or data_spec
        if calib is not None and not given("calib_images"):
            calib_images = int(calib["images"])
        if not given("precision") and rec.get("precision"):
            precision = rec["precision"]  # an int8 specialization rebuilds its int8 files
        q = ((rec.get("artifacts") or {}).get("onnx") or {}).get("quantization") or {}
        if precision == "int8" and q.get("calib_images") and not given("calib_images"):
            quant_images = int(q["calib_images"])
        if rec.get("finetune_epochs"):
            echo(f"note: {arch} was fine-tuned ({rec['finetune_epochs']} epochs) after "
                 f"extraction; this export is not, so its weights differ from that run's model")
        echo(f"as recorded in {arch}: supernet {supernet_name}, BN calibration "
             + ("none" if data_spec == "none" else f"on {calib_images} images of {data_spec}"))
    if precision == "fp16" and not given("formats"):
        formats = "tflite"  # the one fp16 format; an explicit onnx is refused below
    fmts = parse_formats(formats)
    if precision == "fp16":
        from supernet.quantize import check_fp16_format

        for f in fmts:
            check_fp16_format(f, f"--precision fp16 --format {f}")
    if space_name is None:  # a net.config names its space: a reference checkpoint needs it
        sp = net_config_space(arch)
        space_name = None if sp is None else sp.name
    from supernet.resnet_space import RESNET_SPACES

    resnet = space_name in RESNET_SPACES
    if resnet:  # its own arch record and supernet; a reference-layout checkpoint file
        net, a, sub = _resnet_subnet(supernet_name, space_name, arch)
    else:
        net = load_supernet(supernet_name, space_name).eval()
        a = ArchConfig.parse(arch, net.space)
        sub = extract_subnet(net, a).eval()
    ds = load_data(data_spec, supernet_name, echo)
    bn_record = None
    if ds is not None:
        bn_record = calibrate_subnet(sub, ds, a.r, calib_images, spec=data_spec)
    calibration = quant = None
    if precision == "int8":
        if ds is None:
            raise QuantizeError("--precision int8 needs calibration images: give --data "
                                "(training images; the test split is never used)")
        quant = QuantSettings(calib_images=quant_images or calib_images)
        calibration = lambda: (x.numpy() for x in calibration_batches(  # noqa: E731
            ds.holdout, a.r, quant.calib_images, 200, channels_last=False))
    with output_dir_guard(out_dir):
        arts = export_artifacts(sub, (1, 3, a.r, a.r), out_dir, fmts, precision=precision,
                                calibration=calibration, quant=quant)
        meta = (resnet_subnet_metadata if resnet else subnet_metadata)(
            net.space, a, arts, supernet=str(supernet_name), bn_calibrated=ds is not None,
            bn_calibration=bn_record)
        source = net_config_file(arch)
        if source is not None:  # named as the reference names it; bench shows that name
            meta["name"] = source.resolve().parent.name
            meta["source"] = str(source)
        meta = round_floats(meta)
        atomic_write_text(Path(out_dir) / "model.json", json.dumps(meta, indent=2))
    emit(meta, as_json, lambda m: table(
        [(f, v["path"], f"{v['bytes']:,}", f"{v['max_abs_diff']:.2e}") for f, v in m["files"].items()],
        ("format", "file", "bytes", "max |diff| vs torch")) +
        f"\nprecision {precision}" +
        f"\narch {m['arch_string']}: {m['params']:,} params, {m['macs'] / 1e6:.1f}M MACs")


def _resnet_subnet(supernet_name: str, space_name: str, arch: str):
    """``(supernet, arch, subnet)`` of a ResNet-family space from a checkpoint file."""
    from supernet.checkpoint import CheckpointError
    from supernet.resnet import ResNetArch, extract_resnet_subnet, load_resnet_supernet

    if supernet_name == "default":
        raise CheckpointError(f"no {space_name} supernet is bundled: give --supernet FILE (the "
                              f"reference's ofa_resnet50 checkpoint, or a state_dict of its layout)")
    net = load_resnet_supernet(supernet_name, space_name).eval()
    a = ResNetArch.parse(arch, net.space)
    return net, a, extract_resnet_subnet(net, a).eval()


def _specialize_record(arch: str):
    """The report.json of a specialize run when ``--arch`` names one, else None."""
    p = Path(arch)
    if not (arch.endswith(".json") and p.is_file()):
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # ArchConfig.parse reports what is wrong with the file
    if isinstance(data, dict) and "bn_calibration" in data:
        return data
    return None
