"""``ofa-deploy devices``: the local CPU, CUDA GPUs, and registered phones with their state.

Phones are loopback adbd servers (tests/profilers/adbd_server.py) speaking the real ADB protocol:
one that trusts our key (online), one that never answers the key prompt (unauthorized), and an
address nobody listens on (offline).
"""
import json
import os
import socket
from pathlib import Path

import pytest
import yaml

from tests.adbd_loader import adbd_module
from profilers import discovery
from profilers.measure import cpu_model


@pytest.fixture(scope="module")
def adb_key(tmp_path_factory) -> Path:
    from profilers.adb_transport import load_or_create_key

    return load_or_create_key(tmp_path_factory.mktemp("keys") / "adbkey")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def phones(tmp_path_factory, adb_key, monkeypatch):
    adbd = adbd_module()
    base = tmp_path_factory.mktemp("phones")
    ok = adbd.LoopbackAdbd(base / "ok", authorized=[Path(str(adb_key) + ".pub")]).start()
    locked = adbd.LoopbackAdbd(base / "locked", auto_accept=False).start()
    stub = adbd.write_benchmark_stub(base / "benchmark_model")
    common = {"key": str(adb_key), "benchmark_model": str(stub), "retries": 0, "timeout_s": 20,
              "auth_timeout_s": 2}
    reg = base / "devices.yaml"
    reg.write_text(yaml.safe_dump({
        "phone": {"transport": "tcp", "address": ok.address, **common},
        "locked": {"transport": "tcp", "address": locked.address, **common},
        "gone": {"transport": "tcp", "address": f"127.0.0.1:{free_port()}", **common},
    }, sort_keys=False))
    monkeypatch.setenv("OFA_DEPLOY_DEVICES", str(reg))
    yield {"ok": ok, "locked": locked, "registry": reg}
    ok.stop()
    locked.stop()


def test_devices_lists_the_local_cpu(run_cli):
    r = run_cli("devices", "--json", "--no-adb")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    cpu = [d for d in data if d["kind"] == "cpu"]
    assert len(cpu) == 1
    cpu = cpu[0]
    assert cpu["spec"] == "cpu" and cpu["state"] == "online"
    assert cpu["cores"] == os.cpu_count() and cpu["model"] == cpu_model() and cpu["model"]
    assert 1 <= cpu["usable_cores"] <= cpu["cores"]
    # onnxruntime and LiteRT are both installed here
    assert cpu["specs"] == ["cpu", "tflite:cpu"]
    assert not any(d["kind"] == "adb" for d in data)
    import torch

    if not torch.cuda.is_available():
        assert not any(d["kind"] == "cuda" and d["state"] == "online" for d in data)

    r = run_cli("devices", "--no-adb")
    assert r.exit_code == 0
    header, _, row = r.stdout.splitlines()[:3]
    assert header.split() == ["spec", "kind", "state", "name", "details"]
    assert row.startswith("cpu ") and f"{os.cpu_count()} cores" in row


def test_devices_lists_registered_phones_with_their_state(run_cli, phones):
    r = run_cli("devices", "--json")
    assert r.exit_code == 0, r.output
    got = {d["spec"]: d for d in json.loads(r.stdout)}
    assert [s for s in got if s.startswith("adb:")] == ["adb:phone", "adb:locked", "adb:gone"]
    phone = got["adb:phone"]
    assert phone["state"] == "online" and phone["specs"] == ["adb:phone"]
    assert (phone["name"], phone["abi"], phone["android"]) == ("LoopbackPhone", "x86_64", "14")
    assert phone["serial"] == phones["ok"].address
    assert got["adb:locked"]["state"] == "unauthorized" and got["adb:locked"]["specs"] == []
    assert "accept the RSA key" in got["adb:locked"]["reason"]
    assert phones["locked"].prompts  # the phone did show the "Allow USB debugging?" dialog
    assert got["adb:gone"]["state"] == "offline" and "cannot reach" in got["adb:gone"]["reason"]

    r = run_cli("devices")
    rows = {ln.split()[0]: ln.split()[2] for ln in r.stdout.split("\n\n")[0].splitlines()[2:]}
    assert rows == {"cpu": "online", "adb:phone": "online", "adb:locked": "unauthorized",
                    "adb:gone": "offline"}

    # the same probe answers for one device, as bench uses it after a failure
    assert discovery.adb_state("phone") == "online"
    phones["ok"].offline = True
    assert discovery.adb_state("phone") == "offline"


def test_no_registry_lists_no_phones_and_says_where_it_looked(run_cli, tmp_path, monkeypatch):
    monkeypatch.delenv("OFA_DEPLOY_DEVICES", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    r = run_cli("devices", "--json")
    assert r.exit_code == 0
    assert {d["kind"] for d in json.loads(r.stdout)} <= {"cpu", "cuda"}
    assert f"no ADB devices registered ({tmp_path / 'ofa-deploy' / 'devices.yaml'}" in r.stderr


def test_bad_registry_is_a_one_line_error(run_cli, tmp_path, monkeypatch):
    reg = tmp_path / "devices.yaml"
    reg.write_text(yaml.safe_dump({"pixel": {"transport": "carrier-pigeon"}}))
    monkeypatch.setenv("OFA_DEPLOY_DEVICES", str(reg))
    r = run_cli("devices")
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: bad device registry")
    assert "transport" in lines[0]


@pytest.mark.gpu
def test_devices_lists_cuda_gpus(run_cli):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    data = json.loads(run_cli("devices", "--json", "--no-adb").stdout)
    gpus = [d for d in data if d["kind"] == "cuda"]
    assert len(gpus) == torch.cuda.device_count()
    assert gpus[0]["spec"] == "cuda:0" and gpus[0]["state"] == "online"
    assert gpus[0]["name"] == torch.cuda.get_device_name(0)
    assert gpus[0]["memory_gib"] > 0 and gpus[0]["specs"] == ["cuda:0"]
