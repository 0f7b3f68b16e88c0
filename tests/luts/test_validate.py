"""`lut validate`: predicted vs measured whole subnets, metrics, plot, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from luts.builder import build_lut
from luts.table import LatencyTable, LUTError
from luts.validate import sample_archs, summarize, validate_lut
from supernet.arch import ArchConfig
from supernet.ops import arch_ops, enumerate_ops
from supernet.stats import kendall_tau

TINY = "ofa-mbv3-tiny"
RES = [32]


def test_summary_metrics():
    s = summarize([1.04, 0.8, 2.0, 3.3], [1.0, 1.0, 2.0, 3.0])
    assert s["samples"] == 4
    assert s["within_10pct"] == pytest.approx(0.75)
    assert s["within_5pct"] == pytest.approx(0.5)
    assert s["mape"] == pytest.approx((0.04 + 0.2 + 0 + 0.1) / 4)
    assert s["max_abs_rel_err"] == pytest.approx(0.2)
    # measured has a tie: tau-b, not 1 (5 concordant pairs, 1 tied in measured only)
    assert s["kendall_tau"] == pytest.approx(5 / np.sqrt(5 * 6))


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("lut") / "tiny.json"
    build_lut(TINY, "cpu", resolutions=RES, out=out, runs=5, warmup=1, rounds=1, threads=1,
              cache_dir=tmp_path_factory.getbasetemp() / "op-cache", progress=False)
    return out


def test_sample_archs_are_distinct_and_seeded(table_path):
    t = LatencyTable.load(table_path)
    a = sample_archs(t, 6, seed=3)
    assert a == sample_archs(t, 6, seed=3) and len(set(a)) == 6
    assert a != sample_archs(t, 6, seed=4)
    assert all(x.r in RES for x in a)
    with pytest.raises(LUTError, match="not in the latency table"):
        sample_archs(t, 2, 0, resolutions=[40])


def test_validate_measures_subnets_and_reports(table_path, tmp_path):
    t = LatencyTable.load(table_path)
    plot = tmp_path / "v.png"
    r = validate_lut(t, "cpu", samples=4, seed=1, runs=5, warmup=1, rounds=2, plot=plot,
                     progress=False)
    for k in ("samples", "mape", "within_10pct", "kendall_tau", "rows", "meta"):
        assert k in r
    assert r["samples"] == 4 and len(r["rows"]) == 4
    archs = sample_archs(t, 4, seed=1)
    for row, arch in zip(r["rows"], archs):
        assert row["arch"] == arch.to_dict()
        # the prediction is exactly the table's: the ops' entries plus the overhead once,
        # rescaled by the speed the drift check measured (the table is uncalibrated)
        want = sum(t.entries[o].median_ms for o in arch_ops(TINY, arch)) + t.overhead_ms
        assert row["uncalibrated_ms"] == pytest.approx(want * r["meta"]["speed_scale"],
                                                       rel=1e-12)
        assert row["predicted_ms"] == row["uncalibrated_ms"]
        assert row["measured_ms"] > 0 and row["measured_p10_ms"] <= row["measured_ms"]
        assert row["rel_err"] == pytest.approx(row["predicted_ms"] / row["measured_ms"] - 1)
        # loose sanity band, not a timing claim: the same order of magnitude
        assert 0.2 < row["predicted_ms"] / row["measured_ms"] < 5
    rel = np.array([row["rel_err"] for row in r["rows"]])
    assert r["mape"] == pytest.approx(np.mean(np.abs(rel)))
    assert r["within_10pct"] == pytest.approx(np.mean(np.abs(rel) <= 0.1))
    m = r["meta"]
    assert m["device"] == "ort:cpu" and m["space"] == TINY and m["profiler"]["threads"] == 1
    assert m["rounds"] == 2 and m["resolutions"] == RES
    # measured under the table's protocol, with the requested precision
    assert m["protocol"] == {**t.meta["protocol"], "runs": 5, "warmup": 1, "network_rounds": 2}
    d = m["drift"]
    assert d["scale"] == m["speed_scale"] > 0 and len(d["refs"]) == len(t.meta["reference_ops"])
    assert d["scale"] == pytest.approx(np.median([x["now_ms"] / x["then_ms"]
                                                  for x in d["refs"]]))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(r)  # JSON-able


def test_validate_defaults_come_from_the_table(table_path, monkeypatch):
    seen = {}
    import luts.validate as v

    real = v.get_profiler

    def spy(spec, **kw):
        seen.update(kw)
        return real(spec, **kw)

    monkeypatch.setattr(v, "get_profiler", spy)
    r = validate_lut(table_path, "cpu", samples=2, progress=False)
    # runs/warmup/threads/rounds/cache exactly as the table was built
    assert seen == {"threads": 1, "runs": 5, "warmup": 1, "flush_bytes": 0}
    # whole subnets get the protocol's network rounds, not the table's op rounds (1 here)
    proto = LatencyTable.load(table_path).meta["protocol"]
    assert r["meta"]["rounds"] == proto["network_rounds"] == 15 and proto["rounds"] == 1
    assert r["meta"]["protocol"] == proto


def test_validate_refuses_another_protocol(table_path):
    from profilers.protocol import ProtocolMismatch

    with pytest.raises(ProtocolMismatch, match=r"different protocols \(threads 1 vs 2\)"):
        validate_lut(table_path, "cpu", samples=2, threads=2, progress=False)


def test_lut_calibrate_cli_refuses_another_estimator(run_cli, table_path):
    before = LatencyTable.load(table_path).meta
    r = run_cli("lut", "calibrate", "--lut", table_path, "--samples", "4", "--estimator",
                "median-pooled")
    assert r.exit_code != 0
    err = [ln for ln in r.output.splitlines() if ln.startswith("Error")]
    assert len(err) == 1 and "estimator 'best-round-median' vs 'median-pooled'" in err[0], \
        r.output
    assert "Traceback" not in r.output
    assert LatencyTable.load(table_path).meta == before  # nothing measured, nothing written


def test_validate_refuses_incomplete_tables(table_path, tmp_path):
    t = LatencyTable.load(table_path)
    op = enumerate_ops(TINY, RES)[0]
    del t.entries[op]
    with pytest.raises(LUTError, match="incomplete: 1 ops missing"):
        validate_lut(t, "cpu", samples=3, progress=False)
    with pytest.raises(LUTError, match="at least 2"):
        validate_lut(table_path, "cpu", samples=1, progress=False)


def test_lut_validate_cli(run_cli, table_path, tmp_path):
    plot, out = tmp_path / "p.png", tmp_path / "r.json"
    r = run_cli("lut", "validate", "--lut", table_path, "--samples", "3", "--runs", "3",
                "--warmup", "0", "--rounds", "1", "--plot", plot, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["samples"] == 3 and len(d["rows"]) == 3
    # the summary is computed from the rows, and the rows from the table: recompute both
    t = LatencyTable.load(table_path)
    t.speed_scale = d["meta"]["speed_scale"]
    archs = [ArchConfig.from_dict(row["arch"]) for row in d["rows"]]
    assert [row["predicted_ms"] for row in d["rows"]] == pytest.approx(list(t.predict(archs)),
                                                                       rel=1e-12)
    pred = np.array([row["predicted_ms"] for row in d["rows"]])
    meas = np.array([row["measured_ms"] for row in d["rows"]])
    assert d["mape"] == pytest.approx(np.mean(np.abs(pred / meas - 1)))
    assert d["within_10pct"] == pytest.approx(np.mean(np.abs(pred / meas - 1) <= 0.1))
    assert d["kendall_tau"] == pytest.approx(kendall_tau(pred, meas))
    assert d["meta"]["protocol"] == {**t.meta["protocol"], "runs": 3, "warmup": 0, "network_rounds": 1}
    assert json.loads(out.read_text())["rows"] == d["rows"]
    assert plot.is_file() and d["meta"]["device"] == "ort:cpu"
    r = run_cli("lut", "validate", "--lut", table_path, "--samples", "2", "--runs", "2",
                "--rounds", "1", "-q")
    assert r.exit_code == 0 and "Kendall tau" in r.output and "MAPE" in r.output


@pytest.mark.parametrize("args,msg", [
    (["--lut", "missing.json"], "not found"),
    (["--samples", "1"], "--samples"),
    (["--device", "bogus:x"], "unknown backend"),
    (["--resolutions", "33"], "not in space"),
    (["--plot", "x.txt"], ".png"),
    (["--threads", "2", "--samples", "2"], "different protocols (threads 1 vs 2)"),
    (["--estimator", "median-pooled", "--samples", "2"],
     "(estimator 'best-round-median' vs 'median-pooled')"),
    (["--estimator", "mean"], "'mean' is not one of"),
])
def test_lut_validate_cli_errors_are_one_line(run_cli, table_path, args, msg, tmp_path):
    base = ["--lut", str(table_path)] if "--lut" not in args else []
    r = run_cli("lut", "validate", *base, *[str(tmp_path / a) if a.endswith(".json") else a
                                           for a in args])
    assert r.exit_code != 0
    err = [ln for ln in r.output.splitlines() if ln.startswith("Error")]
    assert len(err) == 1 and msg in err[0], r.output
    assert "Traceback" not in r.output
