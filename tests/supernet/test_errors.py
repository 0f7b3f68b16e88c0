"""supernet.errors.first_line: the one place a multi-line third-party error becomes one line."""
from supernet.errors import OfaDeployError, first_line


def test_first_non_empty_line_of_an_exception_or_text():
    exc = ValueError("\n  bad value at line 3  \n  in file x\n")
    assert first_line(exc) == "bad value at line 3"
    assert first_line("mapping values are not allowed here\n  in '<unicode string>'") \
        == "mapping values are not allowed here"
    assert first_line("") == ""


def test_an_empty_message_gives_the_type_name():
    assert first_line(ConnectionResetError()) == "ConnectionResetError"
    assert first_line(RuntimeError("  \n ")) == "RuntimeError"
    assert first_line(RuntimeError(), with_type=True) == "RuntimeError"  # not "RuntimeError: "


def test_with_type_names_foreign_errors_only():
    assert first_line(KeyError("x"), with_type=True) == "KeyError: 'x'"
    assert first_line(OfaDeployError("unknown space 'nope'"), with_type=True) \
        == "unknown space 'nope'"


def test_long_lines_are_cut_with_an_ellipsis():
    msg = first_line(ValueError("x" * 1000), 50)
    assert len(msg) == 50 and msg.endswith("...") and msg.startswith("xxx")
    assert first_line(ValueError("y" * 300)) == "y" * 300  # the default limit keeps 300
    assert len(first_line(ValueError("y" * 301))) == 300
