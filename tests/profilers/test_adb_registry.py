"""The Android device registry: location, defaults, validation messages."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from profilers.devices import (DEFAULT_WORK_DIR, DeviceRegistryError, default_key_path,
                               get_device, load_registry, registry_path)


def write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_registry_location_env_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("OFA_DEPLOY_DEVICES", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert registry_path() == tmp_path / "home" / ".config" / "ofa-deploy" / "devices.yaml"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert registry_path() == tmp_path / "xdg" / "ofa-deploy" / "devices.yaml"
    monkeypatch.setenv("OFA_DEPLOY_DEVICES", str(tmp_path / "mine.yaml"))
    assert registry_path() == tmp_path / "mine.yaml"


def test_key_location(tmp_path, monkeypatch):
    monkeypatch.delenv("OFA_DEPLOY_ADB_KEY", raising=False)
    monkeypatch.delenv("ANDROID_USER_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_key_path() == tmp_path / ".android" / "adbkey"
    monkeypatch.setenv("ANDROID_USER_HOME", str(tmp_path / "ah"))
    assert default_key_path() == tmp_path / "ah" / "adbkey"
    monkeypatch.setenv("OFA_DEPLOY_ADB_KEY", str(tmp_path / "k"))
    assert default_key_path() == tmp_path / "k"


def test_entries_defaults_and_relative_paths(tmp_path):
    p = write(tmp_path / "devices.yaml", {
        "pixel": {"transport": "usb", "benchmark_model": "bin/android_aarch64_benchmark_model",
                  "affinity": "0xF0", "threads": 2},
        "pixel-wifi": {"transport": "tcp", "address": "192.168.1.23:5555",
                       "benchmark_model": "/opt/bm", "key": "keys/adbkey", "retries": 0,
                       "benchmark_args": "--use_xnnpack=false --use_gpu=false"},
        "lab": {"transport": "server", "address": "R58M123ABC", "server": "10.0.0.2:5037",
                "benchmark_model": "/opt/bm", "work_dir": "/data/local/tmp/x/"},
    })
    reg = load_registry(p)
    assert sorted(reg) == ["lab", "pixel", "pixel-wifi"]
    px = reg["pixel"]
    assert px.address is None and px.threads == 2 and px.affinity == "f0"
    assert px.benchmark_model == tmp_path / "bin" / "android_aarch64_benchmark_model"
    assert px.work_dir == DEFAULT_WORK_DIR and px.retries == 3 and px.batches == 5
    assert px.benchmark_args == ("--use_xnnpack=true",)
    wifi = reg["pixel-wifi"]
    assert wifi.host_port == ("192.168.1.23", 5555)
    assert wifi.key == tmp_path / "keys" / "adbkey" and wifi.retries == 0
    assert wifi.benchmark_args == ("--use_xnnpack=false", "--use_gpu=false")
    assert reg["lab"].server_host_port == ("10.0.0.2", 5037)
    assert reg["lab"].work_dir == "/data/local/tmp/x"
    assert get_device("lab", p) == reg["lab"]


def test_every_bad_field_is_named(tmp_path):
    p = write(tmp_path / "devices.yaml", {
        "pixel": {"transport": "bluetooth", "threads": 0, "affinity": "zz", "thread": 4,
                  "timeout_s": -1, "work_dir": "relative/dir"},
        "wifi": {"transport": "tcp", "benchmark_model": "/bm", "address": "host:99999"},
    })
    with pytest.raises(DeviceRegistryError) as ei:
        load_registry(p)
    msg = str(ei.value)
    assert "\n" not in msg  # one line for the CLI
    for needle in ("device 'pixel': transport: must be one of tcp, usb, server",
                   "device 'pixel': threads: must be an integer >= 1, got 0",
                   "device 'pixel': affinity: must be a non-zero hex CPU mask",
                   "device 'pixel': thread: unknown field",
                   "device 'pixel': timeout_s: must be a number > 0",
                   "device 'pixel': work_dir: must be an absolute path",
                   "device 'pixel': benchmark_model: path of TFLite's benchmark_model",
                   "device 'wifi': address: port out of range"):
        assert needle in msg, (needle, msg)


def test_tcp_needs_address_and_server_needs_serial(tmp_path):
    p = write(tmp_path / "d.yaml", {"a": {"transport": "tcp", "benchmark_model": "/bm"},
                                    "b": {"transport": "server", "benchmark_model": "/bm"}})
    with pytest.raises(DeviceRegistryError, match="tcp needs host:port.*server needs"):
        load_registry(p)


def test_unknown_name_lists_registered(tmp_path):
    p = write(tmp_path / "d.yaml", {"pixel": {"transport": "usb", "benchmark_model": "/bm"},
                                    "tab": {"transport": "usb", "benchmark_model": "/bm"}})
    with pytest.raises(DeviceRegistryError, match=r"unknown device 'pxl' .*registered: pixel, tab"):
        get_device("pxl", p)


def test_missing_and_malformed_registry(tmp_path):
    with pytest.raises(DeviceRegistryError, match="no device registry at .*OFA_DEPLOY_DEVICES"):
        load_registry(tmp_path / "none.yaml")
    with pytest.raises(DeviceRegistryError, match="not valid YAML"):
        load_registry(write(tmp_path / "bad.yaml", "pixel: [unclosed"))
    with pytest.raises(DeviceRegistryError, match="must map device names"):
        load_registry(write(tmp_path / "list.yaml", "- pixel\n"))


def test_get_profiler_resolves_adb_name_through_registry(tmp_path, monkeypatch):
    from profilers.base import ProfilerError, get_profiler

    write(tmp_path / "d.yaml", {"pixel": {"transport": "tcp", "address": "127.0.0.1:1",
                                          "benchmark_model": str(tmp_path / "missing-bm")}})
    monkeypatch.setenv("OFA_DEPLOY_DEVICES", str(tmp_path / "d.yaml"))
    with pytest.raises(DeviceRegistryError, match="unknown device 'nexus'"):
        get_profiler("adb:nexus")
    with pytest.raises(ProfilerError, match=r"benchmark_model not found at .*missing-bm"):
        get_profiler("adb:pixel")
