"""Fixtures for the ADB tests: a loopback phone (tests/profilers/adbd_server.py), a registry
naming it, the phone's ``benchmark_model``, a tiny .tflite, and Debian's real adb server."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from adbd_server import LoopbackAdbd, write_benchmark_stub


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory) -> Path:
    """A one-conv .tflite (converted once per session with litert-torch)."""
    litert_torch = pytest.importorskip("litert_torch", reason="litert-torch is not installed")
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval()
    path = tmp_path_factory.mktemp("tflite") / "tiny conv.tflite"  # a space, to test quoting
    litert_torch.convert(model, (torch.randn(1, 3, 16, 16),)).export(str(path))
    return path


@pytest.fixture(scope="session")
def bench_stub(tmp_path_factory) -> Path:
    """The phone's ``benchmark_model``: a script timing with LiteRT, pushed like the binary."""
    return write_benchmark_stub(tmp_path_factory.mktemp("bin") / "android_aarch64_benchmark_model")


@pytest.fixture
def adb_key(tmp_path, monkeypatch) -> Path:
    """Where this test's adb key lives (never the user's ~/.android)."""
    path = tmp_path / "android" / "adbkey"
    monkeypatch.setenv("OFA_DEPLOY_ADB_KEY", str(path))
    return path


@pytest.fixture
def phone(tmp_path):
    srv = LoopbackAdbd(tmp_path / "phone").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def registry(tmp_path, monkeypatch, bench_stub, adb_key):
    """``registry(address, **fields)`` writes devices.yaml with a ``pixel`` entry (fast test
    settings) and points OFA_DEPLOY_DEVICES at it."""
    path = tmp_path / "devices.yaml"

    def write(address: str, name: str = "pixel", **fields) -> Path:
        entry = {"transport": "tcp", "address": address, "threads": 1,
                 "benchmark_model": str(bench_stub), "timeout_s": 20, "auth_timeout_s": 2,
                 "retries": 2, "backoff_s": 0.05, "batches": 2,
                 # A tiny op on a shared 2-core host jitters by more than any real drift check
                 # would allow; test_adb.py checks drift with a phone that really slows down.
                 "drift_tolerance": 100.0}
        entry.update(fields)
        data = yaml.safe_load(path.read_text()) if path.exists() else {}
        data[name] = {k: v for k, v in entry.items() if v is not None}
        path.write_text(yaml.safe_dump(data))
        return path

    monkeypatch.setenv("OFA_DEPLOY_DEVICES", str(path))
    return write


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return port if port != 5555 else _free_port()


@pytest.fixture
def adb_server(tmp_path):
    """Debian's adb server on a private port with its own HOME (so its key is generated
    fresh), run in the foreground so it is ended by its own pid. Yields ``127.0.0.1:PORT``."""
    adb = shutil.which("adb")
    if adb is None:
        pytest.skip("adb is not installed (apt-get install adb)")
    home = tmp_path / "adb-home"
    home.mkdir()
    port = _free_port()
    env = {**os.environ, "HOME": str(home), "ADB_MDNS": "0", "ADB_LIBUSB": "0"}
    env.pop("ANDROID_ADB_SERVER_PORT", None)
    log = open(tmp_path / "adb-server.log", "wb")
    proc = subprocess.Popen([adb, "-L", f"tcp:{port}", "nodaemon", "server"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"adb server exited: {(tmp_path / 'adb-server.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("adb server did not start within 15 s")
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
