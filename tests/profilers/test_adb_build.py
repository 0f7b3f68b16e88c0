"""Latency-table builds on the loopback phone: a build whose connection drops mid-way resumes,
and ``ofa-deploy profile --device adb:pixel`` runs end to end.

Converting an op to .tflite costs seconds, so each build here starts from a partial table (as
an interrupted earlier build leaves it) with all but a few cheap ops of ofa-mbv3-tiny at 32 px
already present; the builder's resume then times only those few on the phone.
"""
from __future__ import annotations

import pytest

pytest.importorskip("litert_torch", reason="litert-torch is not installed")

from luts.builder import METHOD_VERSION, build_lut  # noqa: E402
from luts.table import LatencyTable  # noqa: E402
from profilers.adb_transport import DeviceOffline  # noqa: E402
from profilers.base import LatencyStats  # noqa: E402
from supernet.ops import enumerate_ops  # noqa: E402

SPACE, RES, KEEP = "ofa-mbv3-tiny", [32], 3


@pytest.fixture(scope="session")
def ofa_home(tmp_path_factory):
    """One OFA_DEPLOY_HOME for these tests, so converted op models are shared."""
    return tmp_path_factory.mktemp("ofa-home")


def interrupted_table(path, runs, warmup):
    """Every op but the ``KEEP`` cheapest, with placeholder stats; returns the missing ops."""
    ops = enumerate_ops(SPACE, RES)
    todo = sorted(ops, key=lambda o: (o.macs, o.to_string()))[:KEEP]
    meta = {"device": "adb:pixel", "method": "context-difference",
            "method_version": METHOD_VERSION, "threads": 1, "artifact_format": "tflite",
            "seed": 0, "runs": runs, "warmup": warmup}
    t = LatencyTable(SPACE, RES, meta=meta)
    for op in ops:
        if op not in todo:
            t.add(op, LatencyStats(0.5, 0.4, 0.6, 0.05, 10))
    path.parent.mkdir(parents=True, exist_ok=True)
    t.save(path)
    return todo


def test_build_dropped_mid_way_resumes(tmp_path, monkeypatch, ofa_home, phone, registry):
    monkeypatch.setenv("OFA_DEPLOY_HOME", str(ofa_home))
    registry(phone.address, retries=1, backoff_s=0, batches=2)
    out = tmp_path / "pixel.json"
    todo = interrupted_table(out, runs=2, warmup=1)
    before = out.read_bytes()
    # The build times the overhead model (2 batches), then the first op's context model: the
    # link dies during that benchmark and the phone leaves (Wi-Fi out of range).
    phone.add_fault("vanish", r"--graph=", skip=2)
    # One round: every extra round re-times each missing op once more (best of rounds).
    kw = dict(resolutions=RES, out=out, runs=2, warmup=1, rounds=1, threads=1, progress=False,
              convert_workers=0, drift_every_s=1e9)
    timed = []
    with pytest.raises(DeviceOffline, match=r"device pixel offline: cannot reach .*gave up on "
                                            r"timing ctx-.* after 2 attempts"):
        build_lut(SPACE, "adb:pixel", on_op=lambda op, s: timed.append(op), **kw)
    assert timed == [] and phone.offline
    assert out.read_bytes() == before  # the partial table is intact
    stranded = list(phone.root.rglob("*.tflite"))  # the phone left before it could be cleaned

    phone.offline = False  # back in range: the same command resumes
    n_before = len(phone.shell_log)
    table = build_lut(SPACE, "adb:pixel", on_op=lambda op, s: timed.append(op), **kw)
    assert sorted(timed) == sorted(todo)  # only what the interrupted builds had not timed
    assert table.meta["complete"] and table.missing_ops() == []
    assert table.meta["profiler"]["model"] == "LoopbackPhone"
    assert table.meta["profiler"]["stats_method"].startswith("median/p10/p90 over")
    benches = [c for c in phone.shell_log[n_before:] if "--graph=" in c]
    assert len(benches) >= 2 * (1 + 2 * KEEP)  # overhead + (context + op) per op, 2 batches
    assert list(phone.root.rglob("*.tflite")) == stranded  # only what the vanished link left


def test_cli_profile_on_adb_pixel(tmp_path, monkeypatch, ofa_home, phone, registry):
    from click.testing import CliRunner

    from ofa_deploy.cli import main

    monkeypatch.setenv("OFA_DEPLOY_HOME", str(ofa_home))
    registry(phone.address)
    out = tmp_path / "luts" / "pixel.json"
    defaults = {p.name: p.default for p in main.commands["profile"].params}
    todo = interrupted_table(out, runs=defaults.get("runs", 50), warmup=defaults.get("warmup", 10))
    res = CliRunner().invoke(main, ["profile", "--device", "adb:pixel", "--space", SPACE,
                                    "--resolutions", "32", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    table = LatencyTable.load(out)
    assert table.missing_ops() == [] and table.meta["complete"]
    assert all(table.has(op) for op in todo)
    assert sum("--graph=" in c for c in phone.shell_log) >= 2 * (2 * KEEP + 1)
    # An unknown phone is one line, not a traceback.
    res = CliRunner().invoke(main, ["profile", "--device", "adb:nokia", "--space", SPACE,
                                    "--resolutions", "32"])
    assert res.exit_code != 0 and "unknown device 'nokia'" in res.output
    assert "Traceback" not in res.output
