"""``bench`` labels: an artifact whose sibling model.json lists it and has a ``name`` (what
``export --arch net.config`` records) is shown and recorded with that name; the identity used
for baselines stays the relative path + sha256."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ofa_deploy import bench as B
from supernet.fileio import sha256_file
from tests.ofa_deploy.test_bench import export_onnx, invoke, load

NAME = "cpu_lat-10ms_top1-71.1_finetune-25"
FAST = ("--runs", "3", "--warmup", "1")  # tiny models on the host CPU: labels, not timings


def _model_json(d: Path, name=None, sha=None) -> None:
    f = d / "model.onnx"
    doc = {"space": "tiny", "files": {"onnx": {"path": f.name, "precision": "fp32",
                                               "sha256": sha or sha256_file(f)}}}
    if name is not None:
        doc.update(name=name, source=f"/ref/{name}/net.config")
    (d / "model.json").write_text(json.dumps(doc))


def _artifacts(tmp_path: Path) -> Path:
    root = tmp_path / "arts"
    export_onnx(root / "named" / "model.onnx", channels=8, size=32)
    _model_json(root / "named", NAME)
    export_onnx(root / "plain" / "model.onnx", channels=4, size=32)
    _model_json(root / "plain")  # a model.json without a name
    export_onnx(root / "stale" / "model.onnx", channels=6, size=32)
    _model_json(root / "stale", "other", sha="0" * 64)  # describes another file
    return root


def test_named_artifacts_are_labelled_in_table_json_and_markdown(tmp_path):
    root = _artifacts(tmp_path)
    labels = {a.name: a.label for a in B.collect_artifacts([root])}
    assert labels == {"named/model.onnx": NAME, "plain/model.onnx": None,
                      "stale/model.onnx": None}
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    r = invoke("bench", "-a", root, "-d", "cpu", *FAST, "--json", out, "--markdown", md)
    assert r.exit_code == 0, r.output
    got = {x["artifact"]: x for x in load(out)["results"]}
    assert got["named/model.onnx"]["label"] == NAME
    assert "label" not in got["plain/model.onnx"] and "label" not in got["stale/model.onnx"]
    header = next(line for line in r.stdout.splitlines() if line.startswith("artifact"))
    assert header.split()[:3] == ["artifact", "precision", "label"]
    row = next(line for line in r.stdout.splitlines() if line.startswith("named/"))
    assert row.split()[:3] == ["named/model.onnx", "fp32", NAME]
    assert f"| named/model.onnx | fp32 | {NAME} |" in md.read_text()
    assert f"named/model.onnx ({NAME})" in r.stderr  # progress line

    # the label is not identity: renamed in model.json, the baseline still matches by path
    # and hash, and a relabelled run passes against it
    _model_json(root / "named", "renamed")
    r2 = invoke("bench", "-a", root, "-d", "cpu", *FAST, "--baseline", out,
                "--tolerance", "100000", "--json", tmp_path / "r2.json")
    assert r2.exit_code == 0, r2.output
    got2 = {x["artifact"]: x for x in load(tmp_path / "r2.json")["results"]}
    assert got2["named/model.onnx"]["label"] == "renamed"
    assert got2["named/model.onnx"]["baseline"]["match"] == "exact"
    # a copied directory keeps its label (it travels with model.json)
    shutil.copytree(root / "named", root / "copy")
    assert {a.name: a.label for a in B.collect_artifacts([root])}["copy/model.onnx"] == "renamed"
