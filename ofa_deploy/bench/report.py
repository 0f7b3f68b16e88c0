"""Writing a run's results: the JSON file, JUnit XML for CI, a Markdown summary, and the rows
of the terminal table."""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import List, Optional

from supernet.fileio import atomic_write_text

from .results import BenchReport, BenchResult

__all__ = ["write_json", "write_junit", "write_markdown", "markdown_summary", "result_rows",
           "RESULT_HEADERS", "regression_message", "fmt_ms", "fmt_pct"]


def write_json(path: "str | os.PathLike", report: BenchReport) -> None:
    """Write the report in the ``--json`` format, atomically (a run in progress rewrites it after
    every result)."""
    atomic_write_text(Path(path), json.dumps(report.to_dict(), indent=2) + "\n")


def fmt_ms(v: Optional[float]) -> str:
    """A latency for tables: about four significant digits, ``-`` when missing."""
    return "-" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 100 else f"{v:.1f}")


def fmt_pct(v: Optional[float]) -> str:
    """A signed percentage change (``+3.1%``), ``-`` when missing."""
    return "-" if v is None else f"{v:+.1f}%"


def regression_message(r: BenchResult, tolerance_pct: float) -> str:
    """One line: how much slower a regressed result is than its baseline, and the tolerance."""
    b = r.baseline or {}
    return (f"median {fmt_ms(r.stats.median_ms if r.stats else None)} ms is "
            f"{fmt_pct(b.get('delta_pct'))} vs baseline {fmt_ms(b.get('median_ms'))} ms "
            f"(tolerance {tolerance_pct:g}%)")


def write_junit(path: "str | os.PathLike", report: BenchReport) -> None:
    """JUnit XML: a testsuite per device, a testcase per artifact; regressions are
    ``<failure>``, device/measurement errors ``<error>``, unrunnable pairs ``<skipped>``."""
    tol = float(report.meta.get("tolerance_pct", 0.0))
    root = ET.Element("testsuites", name="ofa-deploy bench")
    devices = list(dict.fromkeys(r.device for r in report.results))
    tot = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    for dev in devices:
        rs = [r for r in report.results if r.device == dev]
        n = {"tests": len(rs), "failures": sum(r.status == "regressed" for r in rs),
             "errors": sum(r.status == "error" for r in rs),
             "skipped": sum(r.status == "skipped" for r in rs),
             "time": sum(r.elapsed_s or 0.0 for r in rs)}
        for k in tot:
            tot[k] += n[k]
        suite = ET.SubElement(root, "testsuite", name=dev, tests=str(n["tests"]),
                              failures=str(n["failures"]), errors=str(n["errors"]),
                              skipped=str(n["skipped"]), time=f"{n['time']:.3f}",
                              timestamp=str(report.meta.get("started_at", "")),
                              hostname=str(report.meta.get("host", {}).get("hostname", "")))
        props = ET.SubElement(suite, "properties")
        for k in ("runs", "warmup", "threads", "tolerance_pct", "min_delta_ms", "baseline"):
            if report.meta.get(k) is not None:
                ET.SubElement(props, "property", name=k, value=str(report.meta[k]))
        for r in rs:
            case = ET.SubElement(suite, "testcase", classname=dev, name=r.artifact.name,
                                 time=f"{r.elapsed_s or 0.0:.3f}")
            if r.status == "regressed":
                f = ET.SubElement(case, "failure", type="LatencyRegression",
                                  message=regression_message(r, tol))
                f.text = json.dumps({"sha256": r.artifact.sha256, "baseline": r.baseline,
                                     "stats": r.stats.to_dict() if r.stats else None})
            elif r.status == "error":
                ET.SubElement(case, "error", type="DeviceError",
                              message=r.reason or "error").text = r.reason
            elif r.status == "skipped":
                ET.SubElement(case, "skipped", message=r.reason or "skipped")
            if r.stats is not None:
                s = r.stats
                ET.SubElement(case, "system-out").text = (
                    f"median {s.median_ms:.4f} ms, p10 {s.p10_ms:.4f} ms, p90 {s.p90_ms:.4f} ms, "
                    f"runs {s.runs}, sha256 {r.artifact.sha256}")
    for k, v in tot.items():
        root.set(k, f"{v:.3f}" if k == "time" else str(v))
    ET.indent(root)
    atomic_write_text(Path(path), '<?xml version="1.0" encoding="utf-8"?>\n'
                  + ET.tostring(root, encoding="unicode") + "\n")


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def markdown_summary(report: BenchReport) -> str:
    """A Markdown summary for CI: verdict and counts, then regressions, errors, all results and
    unmatched baseline entries."""
    m, c = report.meta, report.counts
    tol = float(m.get("tolerance_pct", 0.0))
    verdict = "FAILED" if report.failed else "passed"
    lines = [f"## ofa-deploy bench: {verdict}", "",
             f"{c['ok']} ok, {c['regressed']} regressed, {c['error']} errors, "
             f"{c['skipped']} skipped; {m.get('protocol_text') or str(m.get('runs')) + ' runs'}"
             f" per measurement"
             + (f"; baseline `{m['baseline']}`, tolerance {tol:g}%" if m.get("baseline") else ""),
             ""]

    def tbl(headers, rows):
        out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
        return out + [""]

    reg = report.by_status("regressed")
    if reg:
        lines += ["### Regressions", ""]
        lines += tbl(["artifact", "device", "median ms", "baseline ms", "change"],
                     [[_named(r), r.device, fmt_ms(r.stats.median_ms),
                       fmt_ms(r.baseline["median_ms"]), fmt_pct(r.baseline["delta_pct"])]
                      for r in reg])
    err = report.by_status("error")
    if err:
        lines += ["### Errors", ""]
        lines += tbl(["artifact", "device", "error"],
                     [[_named(r), r.device, r.reason or ""] for r in err])
    lines += ["### Results", ""]
    lines += tbl(list(RESULT_HEADERS), [_row(r) for r in report.results])
    if report.unmatched_baseline:
        lines += ["Baseline entries with no result this run: "
                  + ", ".join(f"`{b['artifact']}` on {b['device']}"
                              for b in report.unmatched_baseline), ""]
    return "\n".join(lines)


def _named(r: BenchResult) -> str:
    """The artifact's path in code style, and its label (a net.config's name) if any."""
    a = r.artifact
    return f"`{a.name}`" + (f" ({a.label})" if a.label else "")


def _row(r: BenchResult) -> List[str]:
    s, b = r.stats, r.baseline or {}
    status = r.status if r.status in ("ok", "regressed") else f"{r.status}: {r.reason}"
    if b.get("match") in ("sha256", "name"):
        status += f" (baseline by {b['match']})"
    return [r.artifact.name, r.artifact.precision, r.artifact.label or "-", r.device,
            fmt_ms(s.median_ms if s else None),
            f"{fmt_ms(s.p10_ms)}–{fmt_ms(s.p90_ms)}" if s else "-",
            fmt_ms(b.get("median_ms")), fmt_pct(b.get("delta_pct")), status]


def result_rows(report: BenchReport) -> List[List[str]]:
    """One row of :data:`RESULT_HEADERS` cells per result, for the terminal table."""
    return [_row(r) for r in report.results]


RESULT_HEADERS = ("artifact", "precision", "label", "device", "median ms", "p10–p90 ms",
                  "baseline ms", "change", "status")


def write_markdown(path: "str | os.PathLike", report: BenchReport) -> None:
    """Write :func:`markdown_summary` to ``path`` atomically."""
    atomic_write_text(Path(path), markdown_summary(report) + "\n")
