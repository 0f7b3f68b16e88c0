"""supernet.fileio.read_yaml: the YAML reader behind the device registry, training configs,
reference tables and ``--config``; every failure is one line of the caller's error type."""
import re

import pytest

from supernet.errors import OfaDeployError
from supernet.fileio import read_yaml, utc_now


class MyError(OfaDeployError):
    pass


def test_reads_yaml_and_an_empty_file_is_none(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("x: 1\nys: [2, 3]\n")
    assert read_yaml(p, "config", MyError) == {"x": 1, "ys": [2, 3]}
    p.write_text("")
    assert read_yaml(p, "config", MyError) is None


def test_failures_are_one_line_errors_of_the_callers_type(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(MyError) as info:
        read_yaml(bad, "device registry", MyError)
    msg = str(info.value)
    assert msg.startswith(f"device registry {bad} is not valid YAML: ") and "\n" not in msg
    with pytest.raises(MyError, match=r"cannot read config .*missing\.yaml: No such file"):
        read_yaml(tmp_path / "missing.yaml", "config", MyError)
    with pytest.raises(MyError, match=r"^create it first$"):
        read_yaml(tmp_path / "missing.yaml", "config", MyError, missing="create it first")
    with pytest.raises(MyError, match="cannot read config .*: Is a directory"):
        read_yaml(tmp_path, "config", MyError)
    made = []
    with pytest.raises(ValueError):
        read_yaml(bad, "x", lambda m: made.append(m) or ValueError(m))  # any error factory
    assert len(made) == 1


def test_utc_now_is_iso_seconds_in_utc():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", utc_now())
