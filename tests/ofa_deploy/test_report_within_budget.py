"""The "within budget" cells of specialize's reports (report.md, summary.md, the CLI table):
yes / no, or "not measured" with the reason; never Python's None/True/False."""
from __future__ import annotations

import re

from ofa_deploy.report import (budget_text, precision_rows, render_markdown,
                               render_precision_table, write_summary)
from ofa_deploy.specialize import Scenario


def _report(precision, within, **extra):
    measured = None if within is None else 0.5
    return {"scenario": f"ort-cpu-0.9ms{'' if precision == 'fp32' else '-' + precision}",
            "target": "cpu", "space": "ofa-mbv3-tiny", "budget_ms": 0.9, "budget_mmacs": None,
            "precision": precision, "arch_string": "r32-x", "predicted_latency_ms": 0.4,
            "predicted_accuracy": 0.8, "measured_accuracy": 0.79, "params": 10, "macs": 20,
            "lut_min_ms": 0.1, "lut_max_ms": 1.0, "within_budget": within,
            "measured_latency_ms": {"median": measured, "p10": measured, "p90": measured},
            "rounds": [{"round": 1, "effective_budget_ms": 0.9, "predicted_latency_ms": 0.4,
                        "measured_ms": measured, "within_budget": within, "chosen": True,
                        "arch_string": "r32-x"}],
            "predicted_accuracy_fp32": 0.81, "float_accuracy_same_subnet": 0.8, **extra}


def _budget_row(md: str) -> str:
    return next(ln for ln in md.splitlines() if ln.startswith("| within budget"))


def _no_python_literals(text: str) -> None:
    assert not re.search(r"\|\s*(None|True|False)\s*\|", text), text


def test_int8_only_fp32_column_says_not_measured_and_why():
    s = Scenario("cpu", 0.9, precision="int8")
    side = precision_rows([(s, _report("int8", True))])
    row = _budget_row("\n".join(render_precision_table(side)))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    assert cells[0].startswith("not measured (") and "fp32" in cells[0]  # why: not searched
    assert cells[1] == "yes"


def test_fp32_int8_unmeasured_and_over_budget(tmp_path):
    s32, s8 = Scenario("cpu", 0.9), Scenario("cpu", 0.9, precision="int8")
    r32, r8 = _report("fp32", None), _report("int8", False)
    side = precision_rows([(s32, r32), (s8, r8)])
    cells = [c.strip() for c in _budget_row("\n".join(render_precision_table(side)))
             .strip("|").split("|")][1:]
    assert cells[0].startswith("not measured") and cells[1] == "no"
    for r in (r32, r8):
        r["by_precision"] = side
        md = render_markdown(r)
        _no_python_literals(md)
    assert "| within budget (measured) | not measured" in render_markdown(r32)
    write_summary([r32, r8], tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    _no_python_literals(summary)
    assert "| no |" in summary and "not measured" in summary


def test_budget_text():
    assert budget_text(True) == "yes" and budget_text(False) == "no"
    assert budget_text(None) == "not measured"
    assert budget_text(None, "no device") == "not measured (no device)"
