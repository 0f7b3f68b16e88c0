"""The loopback adbd (tests/profilers/adbd_server.py) for tests outside that folder."""
import importlib.util
import sys
from pathlib import Path


def adbd_module():
    """The loopback adbd, imported under the name its benchmark_model stub uses."""
    if "adbd_server" not in sys.modules:
        path = Path(__file__).resolve().parent / "profilers" / "adbd_server.py"
        spec = importlib.util.spec_from_file_location("adbd_server", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["adbd_server"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["adbd_server"]
