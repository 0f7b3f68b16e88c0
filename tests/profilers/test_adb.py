"""``adb:NAME`` over the genuine ADB wire protocol, against the loopback phone
(tests/profilers/adbd_server.py): adb-shell straight to adbd, and Debian's adb server."""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from profilers.adb import AdbProfiler
from profilers.adb_transport import (AdbServerTransport, AdbShellTransport, DeviceOffline,
                                     DeviceUnauthorized, TransientAdbError, load_or_create_key)
from profilers.base import DeviceSpec, ProfilerError, get_profiler
from profilers.devices import get_device

BIN_RE = "benchmark_model-"


def bin_pushes(phone):
    return [p for p in phone.pushes if BIN_RE in p[0]]


def leftover_models(phone):
    return sorted(p.name for p in phone.root.rglob("*.tflite"))


# -- keys and authentication ----------------------------------------------------------------
def test_first_use_creates_private_key_and_phone_prompts_once(phone, registry, adb_key):
    registry(phone.address)
    assert not adb_key.exists()
    with AdbShellTransport(get_device("pixel")) as t:
        assert t.shell("echo ready") == (0, "ready\n")
    assert stat.S_IMODE(adb_key.stat().st_mode) == 0o600
    assert adb_key.with_name("adbkey.pub").read_text().split()[0]
    assert len(phone.prompts) == 1  # the phone asked, the (simulated) user allowed
    with AdbShellTransport(get_device("pixel")) as t:  # now the signature alone suffices
        t.shell("true")
    assert len(phone.prompts) == 1 and phone.auth_ok == 2


def test_existing_key_is_used_and_left_alone(tmp_path, phone, registry):
    from adb_shell.auth.keygen import keygen

    key = tmp_path / "mine" / "adbkey"
    key.parent.mkdir()
    keygen(str(key))
    before = key.read_bytes()
    os.chmod(key, 0o640)
    phone.auto_accept = False
    phone.authorize(Path(str(key) + ".pub"))
    registry(phone.address, key=str(key))
    with AdbShellTransport(get_device("pixel")) as t:
        assert t.shell("getprop ro.product.model") == (0, "LoopbackPhone\n")
    assert key.read_bytes() == before and stat.S_IMODE(key.stat().st_mode) == 0o640
    assert phone.prompts == []
    # A key whose .pub went missing gets it back, derived from the private key.
    pub = Path(str(key) + ".pub")
    blob = pub.read_text().split()[0]
    pub.unlink()
    load_or_create_key(key)
    assert pub.read_text().split()[0] == blob and key.read_bytes() == before


def test_unauthorized_phone_fails_fast_with_instructions(phone, registry, bench_stub):
    phone.auto_accept = False  # nobody taps "Allow" on the phone
    registry(phone.address, retries=3, auth_timeout_s=0.5)
    prof = get_profiler("adb:pixel")
    t0 = time.monotonic()
    with pytest.raises(DeviceUnauthorized,
                       match="device pixel unauthorized: accept the RSA key prompt on the phone"):
        prof.measure(bench_stub, (1, 3, 16, 16))  # any file: it never gets that far
    assert time.monotonic() - t0 < 5
    assert len(phone.prompts) == 1 and phone.connections == 1  # not retried


def test_offline_phone_retries_with_backoff_then_says_offline(tmp_path, registry, bench_stub):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there
    registry(dead, retries=2, backoff_s=0.5)
    delays = []
    prof = AdbProfiler(DeviceSpec.parse("adb:pixel"), sleep=delays.append)
    with pytest.raises(DeviceOffline, match=r"device pixel offline: cannot reach .*gave up on "
                                            r"timing .* after 3 attempts"):
        prof.measure(bench_stub, (1,))
    assert delays == [0.5, 1.0]


# -- transport: shell, push, stat ------------------------------------------------------------
@pytest.mark.parametrize("via", ["adb-shell", "adb-server"])
def test_transport_shell_push_stat(tmp_path, phone, registry, via, request):
    if via == "adb-server":
        server = request.getfixturevalue("adb_server")
        registry(phone.address, transport="server", server=server)
        cls = AdbServerTransport
    else:
        registry(phone.address)
        cls = AdbShellTransport
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(300_000))  # several DATA chunks and WRTE packets
    remote = "/data/local/tmp/o d/it's here.bin"
    with cls(get_device("pixel")) as t:
        assert t.stat(remote) is None
        t.push(src, remote, mode=0o640)
        st = t.stat(remote)
        assert st is not None and st.size == 300_000 and stat.S_IMODE(st.mode) == 0o640
        rc, out = t.shell("cat '/data/local/tmp/o d/it'\\''s here.bin' | wc -c; echo oops >&2; "
                          "exit 7")
        assert rc == 7 and out.split() == ["300000", "oops"]
    assert (phone.root / "o d" / "it's here.bin").read_bytes() == src.read_bytes()
    assert len(phone.prompts) == 1  # first-time auth: accepted on the phone


# -- measuring -------------------------------------------------------------------------------
def test_measure_pushes_binary_once_times_and_cleans_up(phone, registry, tiny_tflite):
    registry(phone.address, affinity="1", work_dir="/data/local/tmp/ofa deploy's")
    prof = get_profiler("adb:pixel", runs=6, warmup=2)
    assert isinstance(prof, AdbProfiler) and prof.artifact_format == "tflite"
    s1 = prof.measure(tiny_tflite, (1, 3, 16, 16))
    s2 = prof.measure(str(tiny_tflite), (1, 3, 16, 16))
    for s in (s1, s2):
        assert 0 < s.p10_ms <= s.median_ms <= s.p90_ms < 1000
        assert s.runs == 6 and s.std_ms >= 0
    assert prof.last_meta["batches"] == 2 and prof.last_meta["output_format"] == "current"
    assert prof.last_meta["input_shape"] == [1, 3, 16, 16]
    bench = [c for c in phone.shell_log if BIN_RE in c and "--graph=" in c]
    assert len(bench) == 4  # 2 artifacts x 2 batches
    assert bench[0].startswith("( taskset 1 '/data/local/tmp/ofa deploy'\"'\"'s/bin/")
    assert "--num_threads=1" in bench[0] and "--num_runs=3" in bench[0]
    assert "--warmup_runs=2" in bench[0] and "--use_xnnpack=true" in bench[0]
    assert len(bin_pushes(phone)) == 1 and leftover_models(phone) == []
    d = prof.describe()
    assert d["model"] == "LoopbackPhone" and d["abi"] == "x86_64" and d["affinity"] == "1"
    assert d["benchmark_model_sha256"] and "batch means" in d["stats_method"]
    prof.close()
    assert not any((phone.root / "ofa deploy's" / "tmp").iterdir())
    # A new session (another process, another day) finds the binary cached by its hash.
    with get_profiler("adb:pixel", runs=2, warmup=1) as again:
        again.measure(tiny_tflite, (1, 3, 16, 16))
        assert again.binary_pushes == 0
    assert len(bin_pushes(phone)) == 1


def test_stale_sessions_of_dead_processes_are_swept(phone, registry, tiny_tflite):
    import subprocess
    import sys

    registry(phone.address)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    prof = get_profiler("adb:pixel", runs=2, warmup=1)
    host = prof._host_tag
    tmp = phone.root / "ofa-deploy" / "tmp"
    stale, alive, other = (tmp / f"{host}-{dead}-abc123", tmp / f"{host}-{os.getpid()}-abc123",
                           tmp / f"otherhost-{dead}-abc123")
    for d in (stale, alive, other):
        d.mkdir(parents=True)
        (d / "00001-op.tflite").write_bytes(b"x")
    prof.measure(tiny_tflite, (1, 3, 16, 16))
    prof.close()
    assert not stale.exists()  # its process is gone
    assert alive.exists() and other.exists()  # a live process's, another host's: not ours


def test_older_benchmark_model_output(phone, registry, tiny_tflite):
    phone.env["BENCHMARK_MODEL_OUTPUT"] = "legacy"
    registry(phone.address, batches=1)
    with get_profiler("adb:pixel", runs=3, warmup=1) as prof:
        s = prof.measure(tiny_tflite, (1, 3, 16, 16))
        assert prof.last_meta["output_format"] == "legacy"
    assert s.median_ms == s.p10_ms == s.p90_ms > 0 and s.runs == 3


def test_phone_slowing_down_raises_drift_warning(phone, registry, tiny_tflite):
    from profilers.measure import DriftWarning

    phone.env["BENCHMARK_MODEL_SLOWDOWN_US"] = "5000"  # +5 ms per inference, per invocation
    registry(phone.address, batches=4, drift_tolerance=0.2)
    with get_profiler("adb:pixel", runs=8, warmup=1) as prof:
        with pytest.warns(DriftWarning, match="drifted"):
            s = prof.measure(tiny_tflite, (1, 3, 16, 16))
        means = prof.last_meta["batch_means_ms"]
    assert prof.last_meta["drifted"] and prof.last_meta["drift"] > 0.2
    assert sum(means[2:]) - sum(means[:2]) > 10  # 5, 10 vs 15, 20 ms added
    assert s.p10_ms < s.median_ms < s.p90_ms and s.runs == 8


def test_hung_benchmark_times_out_and_is_cleaned_up(phone, registry, tiny_tflite):
    phone.add_fault("hang", r"--graph=", times=10)
    registry(phone.address, timeout_s=1, retries=1, backoff_s=0)
    prof = get_profiler("adb:pixel", runs=2, warmup=1)
    t0 = time.monotonic()
    with pytest.raises(TransientAdbError, match=r"timed out.*gave up on timing .* after 2 "
                                                r"attempts"):
        prof.measure(tiny_tflite, (1, 3, 16, 16))
    assert time.monotonic() - t0 < 15
    assert len([c for c in phone.shell_log if "--graph=" in c]) == 2
    assert leftover_models(phone) == []  # removed after reconnecting


@pytest.mark.parametrize("via", ["adb-shell", "adb-server"])
def test_connection_dropped_mid_benchmark_is_retried(phone, registry, tiny_tflite, via,
                                                     request):
    phone.add_fault("drop", r"--graph=")  # the link dies while the first batch runs
    if via == "adb-server":
        registry(phone.address, transport="server", server=request.getfixturevalue("adb_server"))
    else:
        registry(phone.address)
    with get_profiler("adb:pixel", runs=4, warmup=1) as prof:
        s = prof.measure(tiny_tflite, (1, 3, 16, 16))
        assert s.median_ms > 0 and s.runs == 4
    assert phone.connections >= 2
    assert len(bin_pushes(phone)) == 1  # the reconnect found the cached binary
    assert leftover_models(phone) == []


def test_failing_benchmark_is_reported_not_retried(phone, registry, tiny_tflite):
    registry(phone.address, benchmark_args=["--bogus_flag=1"])
    prof = get_profiler("adb:pixel", runs=2, warmup=1)
    with pytest.raises(ProfilerError, match="Unconsumed cmdline flags: --bogus_flag=1"):
        prof.measure(tiny_tflite, (1, 3, 16, 16))
    assert len([c for c in phone.shell_log if "--graph=" in c]) == 1
    assert leftover_models(phone) == []


def test_missing_artifact(phone, registry, tmp_path):
    registry(phone.address)
    with pytest.raises(ProfilerError, match="no such .tflite file"):
        get_profiler("adb:pixel").measure(tmp_path / "nope.tflite", (1,))


# -- through Debian's adb server -------------------------------------------------------------
def test_server_transport_measures_after_first_auth(phone, registry, adb_server, tiny_tflite):
    registry(phone.address, transport="server", server=adb_server)
    with get_profiler("adb:pixel", runs=4, warmup=1) as prof:
        s = prof.measure(tiny_tflite, (1, 3, 16, 16))
        assert prof.describe()["via"] == "adb-server"
    assert 0 < s.p10_ms <= s.median_ms <= s.p90_ms and s.runs == 4
    assert len(phone.prompts) == 1 and "host::" in phone.client_banners[0]
    assert leftover_models(phone) == []


def test_server_transport_unauthorized(phone, registry, adb_server, bench_stub):
    phone.auto_accept = False
    registry(phone.address, transport="server", server=adb_server, auth_timeout_s=1)
    with pytest.raises(DeviceUnauthorized, match="device pixel unauthorized: accept the RSA key"):
        get_profiler("adb:pixel").measure(bench_stub, (1,))
    assert len(phone.prompts) == 1


def test_server_transport_without_server(phone, registry, bench_stub):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    registry(phone.address, transport="server", server=f"127.0.0.1:{port}", retries=0)
    with pytest.raises(DeviceOffline, match=f"no adb server at 127.0.0.1:{port}.*adb "
                                            f"start-server"):
        get_profiler("adb:pixel").measure(bench_stub, (1,))
