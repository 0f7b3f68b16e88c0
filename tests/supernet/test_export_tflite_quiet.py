"""quiet_native_output (the scope export_tflite converts in) restores what it changes: file
descriptors 1/2 and os.environ, also when the body raises. Tested directly: no litert needed."""
import os

import pytest

from supernet.export_tflite import quiet_native_output


def _fd_identity(fd):
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def _process_state():
    return _fd_identity(1), _fd_identity(2), dict(os.environ)


def test_native_output_goes_to_the_log_and_state_is_restored(monkeypatch):
    monkeypatch.delenv("LITERT_TORCH_SHOW_PROGRESS", raising=False)
    before = _process_state()
    with quiet_native_output() as log:
        assert os.environ["LITERT_TORCH_SHOW_PROGRESS"] == "n"
        assert _fd_identity(1) != before[0] and _fd_identity(2) != before[1]
        os.write(1, b"converter says hello\n")
        os.write(2, b"converter warns\n")
        text = log.read_text()
    assert "converter says hello" in text and "converter warns" in text
    assert _process_state() == before
    assert not log.exists()  # the log is removed with the scope


def test_state_is_restored_when_the_body_raises(monkeypatch):
    monkeypatch.setenv("LITERT_TORCH_SHOW_PROGRESS", "y")
    monkeypatch.setenv("OFA_TEST_CHANGED_INSIDE", "before")
    before = _process_state()
    with pytest.raises(RuntimeError, match="conversion failed"):
        with quiet_native_output():
            # what a converter import might do to the environment
            os.environ["OFA_TEST_ADDED_INSIDE"] = "1"
            os.environ["OFA_TEST_CHANGED_INSIDE"] = "after"
            raise RuntimeError("conversion failed")
    assert _process_state() == before
    assert os.environ["LITERT_TORCH_SHOW_PROGRESS"] == "y"
    assert "OFA_TEST_ADDED_INSIDE" not in os.environ
