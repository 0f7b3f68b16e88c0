"""Reference OFA YAML tables: key mapping, import/export, the shipped Note10 table, and the
reference's own latency summation, plus the ``ofa-deploy lut`` commands."""
import json
from pathlib import Path

import click
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from luts import LatencyTable, LUTError, builtin_table_path, load_table
from luts.reference import (NOTE10_META, Z_P90, export_reference_tables, import_reference_tables,
                            make_note10_table, opkey_to_reference_key, reference_key_to_opkey)
from ofa_deploy.cli import main
from profilers.base import LatencyStats
from supernet import ArchConfig
from supernet.batch import ArchBatch
from supernet.ops import OpKey, enumerate_ops

# Copies of han-cai/files ofa/note10/{r}_lookup_table.yaml (commit a7c9bcd, MIT licence).
NOTE10_DIR = Path(__file__).parent / "data" / "ofa-note10-lut"
NOTE10_RES = (160, 176, 192, 208, 224)
W12 = "ofa-mbv3-w1.2"


@pytest.fixture(scope="module")
def raw():
    return {r: yaml.safe_load((NOTE10_DIR / f"{r}_lookup_table.yaml").read_text())
            for r in NOTE10_RES}


@pytest.fixture(scope="module")
def note10():
    return make_note10_table(NOTE10_DIR)


def reference_latency(tables: dict, spec: dict) -> float:
    """The reference tutorial's summation for the w1.2 space, written from its semantics: the
    stem, a fixed no-expansion first block, each block the stage depth keeps (middle width =
    round(in * e), the first of a stage strided and without shortcut), then the final expand,
    pool, feature mix and classifier, all looked up in the table of the arch's resolution."""
    r = spec["r"][0] if isinstance(spec["r"], list) else spec["r"]
    lut = tables[r]

    def q(key):
        return lut[key]["mean"]

    def conv(h, c):
        return f"{h}x{h}x{c}"

    size = (r + 1) // 2
    total = q(f"Conv-input:{conv(r, 3)}-output:{conv(size, 24)}")
    total += q(f"expanded_conv-input:{conv(size, 24)}-output:{conv(size, 24)}-expand:24"
               f"-kernel:3-stride:1-idskip:1-se:0-hs:0")
    widths, strides = (32, 48, 96, 136, 192), (2, 2, 2, 1, 2)
    hswish, se = (0, 0, 1, 1, 1), (0, 1, 0, 1, 1)
    cin = 24
    for stage in range(5):
        for pos in range(spec["d"][stage]):
            i = stage * 4 + pos
            stride = strides[stage] if pos == 0 else 1
            out = (size - 1) // stride + 1
            mid = round(cin * spec["e"][i])
            total += q(f"expanded_conv-input:{conv(size, cin)}-output:{conv(out, widths[stage])}"
                       f"-expand:{mid}-kernel:{spec['ks'][i]}-stride:{stride}"
                       f"-idskip:{0 if pos == 0 else 1}-se:{se[stage]}-hs:{hswish[stage]}")
            size, cin = out, widths[stage]
    total += q(f"Conv_1-input:{conv(size, 192)}-output:{conv(size, 1152)}")
    total += q(f"AvgPool2D-input:{conv(size, 1152)}-output:{conv(1, 1152)}")
    total += q(f"Conv_2-input:{conv(1, 1152)}-output:{conv(1, 1536)}")
    total += q("Logits-input:1x1x1536-output:1000")
    return total


def test_every_reference_key_maps_to_an_op_and_back(raw):
    for r, tab in raw.items():
        ops = set(enumerate_ops(W12, [r]))
        mapped = {reference_key_to_opkey(k, W12): k for k in tab}
        assert set(mapped) == ops, f"resolution {r}: tables and enumerate_ops disagree"
        for op, key in mapped.items():
            assert opkey_to_reference_key(op, W12) == key
    # the no-expansion first block is recognised as such, not as an elastic block
    op = reference_key_to_opkey("expanded_conv-input:112x112x24-output:112x112x24-expand:24"
                                "-kernel:3-stride:1-idskip:1-se:0-hs:0", W12)
    assert op.kind == "first_block" and op.skip and op.act == "relu"
    op = reference_key_to_opkey("expanded_conv-input:14x14x96-output:14x14x136-expand:384"
                                "-kernel:5-stride:1-idskip:0-se:1-hs:1", W12)
    assert (op.kind, op.mid, op.se, op.act, op.skip) == ("block", 384, 96, "h_swish", False)


@pytest.mark.parametrize("key,match", [
    ("Conv-input:224x224x3", "not a reference latency key"),
    ("Conv-input:224x224x3-output:111x111x24", "stem output size"),
    ("Conv-input:224x200x3-output:112x112x24", "square"),
    ("expanded_conv-input:14x14x96-output:14x14x136-expand:384-kernel:5-stride:1-idskip:0-se:0"
     "-hs:1", "se should be 1"),
    ("expanded_conv-input:14x14x96-output:14x14x136-expand:384-kernel:5-stride:1-idskip:1-se:1"
     "-hs:1", "idskip should be 0"),
    ("expanded_conv-input:14x14x96-output:14x14x136-expand:384-kernel:5-stride:1-idskip:0-se:1"
     "-hs:0", "hs should be 1"),
    ("expanded_conv-input:14x14x96-output:14x14x100-expand:384-kernel:5-stride:1-idskip:0-se:1"
     "-hs:1", "no block maps 96 -> 100"),
    ("Logits-input:1x1x1536-output:1x1x1000", "malformed output"),
    ("Conv_1-input:7x7x192-output:7x7x1152-expand:4-kernel:3-stride:1-idskip:0-se:0-hs:0",
     "unexpected"),
])
def test_bad_reference_keys(key, match):
    with pytest.raises(LUTError, match=match):
        reference_key_to_opkey(key, W12)


def test_op_outside_the_key_format_is_refused():
    for op in (OpKey("block", 14, 96, 136, mid=384, kernel=5, stride=1, se=96, act="relu6"),
               OpKey("block", 56, 32, 32, mid=96, kernel=3, stride=1, act="relu6", skip=True),
               OpKey("stem", 224, 3, 24, kernel=5, stride=2, act="h_swish")):
        with pytest.raises(LUTError, match="cannot be written as a reference key"):
            opkey_to_reference_key(op, W12)


def test_note10_covers_every_op_and_converts_stats(note10, raw):
    assert note10.missing_ops() == []
    assert len(note10.entries) == len(enumerate_ops(W12, NOTE10_RES)) == 450
    key = "expanded_conv-input:56x56x32-output:28x28x48-expand:192-kernel:5-stride:2-idskip:0-se:1-hs:0"
    src = raw[224][key]
    s = note10.get(reference_key_to_opkey(key, W12), 224)
    assert (s.median_ms, s.std_ms, s.runs) == (src["mean"], src["std"], src["count"])
    assert s.p10_ms == pytest.approx(src["mean"] - Z_P90 * src["std"], rel=1e-12)
    assert s.p90_ms == pytest.approx(src["mean"] + Z_P90 * src["std"], rel=1e-12)
    # ops measured at several resolutions keep one value per resolution
    head = OpKey("classifier", 1, 1536, 1000)
    for r in NOTE10_RES:
        assert note10.get(head, r).median_ms == raw[r]["Logits-input:1x1x1536-output:1000"]["mean"]
    assert note10.meta["provenance"] == NOTE10_META["provenance"]
    assert "a7c9bcd" in note10.meta["provenance"] and note10.meta["licence"] == "MIT"


def test_shipped_note10_table_is_the_conversion_of_the_reference(note10):
    shipped = load_table("note10")
    assert shipped.get_state() == note10.get_state()
    assert builtin_table_path("note10").read_text() == note10.to_json()
    m = shipped.meta
    assert (m["device"], m["backend"], m["space"]) == ("note10", "tflite (reference)", W12)
    assert m["resolutions"] == list(NOTE10_RES)


def test_note10_predictions_equal_reference_summation(note10, raw):
    rng = np.random.default_rng(0)
    archs = [ArchConfig.sample(W12, rng, resolutions=NOTE10_RES) for _ in range(3000)]
    archs += [ArchConfig.min(W12, r) for r in NOTE10_RES] + [ArchConfig.max(W12, r)
                                                             for r in NOTE10_RES]
    got = note10.predict(archs)
    want = np.array([reference_latency(raw, a.to_dict()) for a in archs])
    np.testing.assert_allclose(got, want, rtol=1e-9)
    # the reference's own spec layout (r as a one-element list) reads the same
    spec = {**archs[0].to_dict(), "r": [archs[0].r]}
    assert note10.predict_one(ArchConfig.from_dict(spec, W12)) == pytest.approx(
        reference_latency(raw, spec), rel=1e-9)
    # with all choices monotone, the exact range is reached by the min/max subnets
    for r in NOTE10_RES:
        lo, hi = note10.min_max([r])
        sel = np.array([a.r == r for a in archs])
        assert lo <= want[sel].min() + 1e-9 and hi >= want[sel].max() - 1e-9
    with pytest.raises(LUTError, match="resolution"):
        note10.predict([ArchConfig.max(W12, 164)])


def test_yaml_round_trip_is_exact(note10, raw, tmp_path):
    files = export_reference_tables(note10, tmp_path / "out")
    assert sorted(f.name for f in files) == sorted(f"{r}_lookup_table.yaml" for r in NOTE10_RES)
    for r in NOTE10_RES:
        back = yaml.safe_load((tmp_path / "out" / f"{r}_lookup_table.yaml").read_text())
        assert back == raw[r]  # same keys, same count/mean/std, bit for bit
    again = import_reference_tables(tmp_path / "out", W12, NOTE10_META)
    assert again.get_state() == note10.get_state()


def test_export_import_of_a_profiled_table_keeps_predictions(tmp_path):
    space = "ofa-mbv3-tiny"
    res = (32, 40)
    rng = np.random.default_rng(5)
    t = LatencyTable(space, res, entries={
        op: LatencyStats(v, 0.8 * v, 1.3 * v, 0.1 * v, 30)
        for op in enumerate_ops(space, res) for v in [0.01 + float(rng.random())]})
    export_reference_tables(t, tmp_path)
    back = import_reference_tables(tmp_path, space)
    assert back.missing_ops() == []
    batch = ArchBatch.sample(space, 500, rng, resolutions=res)
    np.testing.assert_allclose(back.predict(batch), t.predict(batch), rtol=1e-12)


def test_import_errors(tmp_path):
    with pytest.raises(LUTError, match="directory not found"):
        import_reference_tables(tmp_path / "none", W12)
    with pytest.raises(LUTError, match="no reference tables"):
        import_reference_tables(tmp_path, W12)
    (tmp_path / "224_lookup_table.yaml").write_text("a: [unclosed")
    with pytest.raises(LUTError, match="not valid YAML"):
        import_reference_tables(tmp_path, W12)
    (tmp_path / "224_lookup_table.yaml").write_text(
        "Conv-input:224x224x3-output:112x112x24: {count: 5, mean: -1.0, std: 0.1}\n")
    with pytest.raises(LUTError, match="impossible values"):
        import_reference_tables(tmp_path, W12)
    (tmp_path / "224_lookup_table.yaml").write_text(
        "Conv-input:192x192x3-output:96x96x24: {count: 5, mean: 1.0, std: 0.1}\n")
    with pytest.raises(LUTError, match="not an op of space ofa-mbv3-w1.2 at resolution 224"):
        import_reference_tables(tmp_path, W12)


# -- CLI --------------------------------------------------------------------------------------
def test_lut_group_is_importable_for_other_commands():
    from ofa_deploy.cli.lut import lut

    assert isinstance(lut, click.Group)
    assert {"show", "import-reference", "export-reference"} <= set(lut.commands)


def test_cli_show_note10():
    res = CliRunner().invoke(main, ["lut", "show", "note10"])
    assert res.exit_code == 0, res.output
    assert "Samsung Galaxy Note10" in res.output and "missing ops  0" in res.output
    res = CliRunner().invoke(main, ["lut", "show", "note10", "--json", "--top", "3"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    t = load_table("note10")
    assert d["entries"] == 450 and d["missing_ops"] == [] and len(d["top_ops"]) == 3
    for x in d["latency_range"]:
        assert (x["min_ms"], x["max_ms"]) == t.min_max([x["resolution"]])
    assert d["top_ops"][0]["median_ms"] == max(
        s.median_ms for ents in [t.entries, *t.resolution_entries.values()] for s in ents.values())


def test_cli_import_export_and_missing(tmp_path):
    runner = CliRunner()
    out = tmp_path / "n10.json"
    res = runner.invoke(main, ["lut", "import-reference", str(NOTE10_DIR), "--space", W12,
                               "--out", str(out), "--device", "note10", "--meta", "who=test"])
    assert res.exit_code == 0, res.output
    t = LatencyTable.load(out)
    assert t.meta["who"] == "test" and t.missing_ops() == []
    res = runner.invoke(main, ["lut", "export-reference", str(out), "--out", str(tmp_path / "y")])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "y").glob("*_lookup_table.yaml"))) == 5
    # a table with a hole: listed, no range unless --interpolate
    victim = next(op for op in t.entries if op.kind == "block")
    del t.entries[victim]
    t.save(out)
    res = runner.invoke(main, ["lut", "show", str(out), "--json"])
    d = json.loads(res.output)
    assert d["missing_ops"] == [victim.to_string()] and d["latency_range"] is None
    res = runner.invoke(main, ["lut", "show", str(out), "--json", "--interpolate"])
    d = json.loads(res.output)
    assert list(d["interpolated"]) == [victim.to_string()] and len(d["latency_range"]) == 5


def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    runner = CliRunner()
    for args in (["lut", "show", str(bad)], ["lut", "show", str(tmp_path / "none.json")],
                 ["lut", "import-reference", str(tmp_path), "--space", W12, "--out",
                  str(tmp_path / "o.json")],
                 ["lut", "show", "note10", "--space", "no-such-space"]):
        res = runner.invoke(main, args)
        assert res.exit_code == 1, (args, res.output)
        assert res.output.startswith("Error:") and len(res.output.strip().splitlines()) == 1
        assert "Traceback" not in res.output
