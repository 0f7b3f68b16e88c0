"""Specialization reports: report.json (machines), report.md (people), plots."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from supernet.fileio import atomic_write_text

__all__ = ["write_report", "render_markdown", "plot_search", "plot_pred_vs_measured",
           "write_summary", "round_floats", "pareto_front", "zoom_range", "precision_rows",
           "render_precision_table", "budget_text"]


def round_floats(obj: Any, sig: int = 7) -> Any:
    """``obj`` with every float rounded to ``sig`` significant digits, so JSON people read
    says ``1.438``, not ``1.4380000000000002`` (a sum of table entries). Seven digits keep
    every value within 5e-7 of the computed one, far below any timing's noise."""
    if isinstance(obj, float):
        return float(f"{obj:.{sig}g}") if math.isfinite(obj) else obj
    if isinstance(obj, Mapping):
        return {k: round_floats(v, sig) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_floats(v, sig) for v in obj]
    return obj


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


_ROW_KEYS = ("scenario", "arch_string", "predicted_latency_ms", "within_budget",
             "predicted_accuracy", "measured_accuracy", "measured_accuracy_by_format",
             "bytes_by_format")


def budget_text(within: Optional[bool], why: Optional[str] = None) -> str:
    """A report's "within budget" cell: ``yes``/``no``, or ``not measured`` (with ``why`` in
    parentheses) when nothing was timed, so a reader never sees Python's None."""
    if within is True:
        return "yes"
    if within is False:
        return "no"
    return "not measured" + (f" ({why})" if why else "")


def _budget_why(rep: Mapping[str, Any]) -> str:
    """Why a report's winner has no within-budget verdict."""
    if rep.get("searched") is False:  # precision_rows' fp32 row of an int8-only run
        return "fp32 not searched, the int8 winner in float"
    target = rep.get("target")
    return f"the winner was not timed{f' on {target}' if target else ''}"


def precision_rows(group: Sequence[tuple]) -> Dict[str, dict]:
    """The ``by_precision`` section of the reports of one (target, budget): for each
    (scenario, report) of ``group``, the winner's predicted and measured (median) latency,
    per-format latency and file size, predicted and measured test accuracy. An int8 run
    without its fp32 twin gets an fp32 row of the same subnet in float (``searched`` false:
    accuracy only; nothing was searched, exported or timed at fp32)."""
    rows: Dict[str, dict] = {}
    for s, r in group:
        row = {k: r.get(k) for k in _ROW_KEYS}
        row["measured_latency_ms"] = (r.get("measured_latency_ms") or {}).get("median")
        row["measured_latency_by_format"] = {
            f: (v or {}).get("median") for f, v in (r.get("measured_latency_by_format") or {}).items()}
        row["searched"] = True
        rows[s.precision] = row
    if "fp32" not in rows and "int8" in rows:
        r = next(r for s, r in group if s.precision == "int8")
        rows["fp32"] = {**{k: None for k in _ROW_KEYS}, "measured_latency_ms": None,
                        "measured_latency_by_format": {}, "searched": False,
                        "arch_string": r["arch_string"],
                        "predicted_accuracy": r.get("predicted_accuracy_fp32"),
                        "measured_accuracy": r.get("float_accuracy_same_subnet"),
                        "note": "the int8 winner in float (not searched at fp32: run "
                                "--precision fp32,int8 for that)"}
    order = ("fp32", "int8")
    return {p: rows[p] for p in sorted(rows, key=lambda p: order.index(p) if p in order else 9)}


def _by_fmt(d: Mapping[str, Any] | None, nd: int, scale: float = 1.0) -> str:
    if not d:
        return "n/a"
    return ", ".join(f"{f} {_fmt(None if v is None else v * scale, nd)}" for f, v in d.items())


def render_precision_table(by_precision: Mapping[str, Mapping[str, Any]]) -> List[str]:
    """Markdown lines of the fp32-vs-int8 table (one column per precision)."""
    precs = list(by_precision)
    rows = [("arch", lambda r: f"`{r['arch_string']}`" if r.get("arch_string") else "n/a"),
            ("searched at this precision", lambda r: "yes" if r.get("searched") else "no"),
            ("predicted latency (ms)", lambda r: _fmt(r.get("predicted_latency_ms"))),
            ("measured latency median (ms)", lambda r: _fmt(r.get("measured_latency_ms"))),
            ("measured latency by file (ms)",
             lambda r: _by_fmt(r.get("measured_latency_by_format"), 3)),
            ("within budget (measured)",
             lambda r: budget_text(r.get("within_budget"), _budget_why(r))),
            ("predicted accuracy", lambda r: _fmt(r.get("predicted_accuracy"), 4)),
            ("test accuracy (measured)", lambda r: _fmt(r.get("measured_accuracy"), 4)),
            ("test accuracy by file", lambda r: _by_fmt(r.get("measured_accuracy_by_format"), 4)),
            ("file size (KiB)", lambda r: _by_fmt(r.get("bytes_by_format"), 1, 1 / 1024))]
    lines = ["| | " + " | ".join(precs) + " |", "|---|" + "---|" * len(precs)]
    for label, get in rows:
        lines.append(f"| {label} | " + " | ".join(get(by_precision[p]) for p in precs) + " |")
    notes = [f"{p}: {r['note']}" for p, r in by_precision.items() if r.get("note")]
    return lines + ([""] + notes if notes else [])


def render_markdown(rep: Mapping[str, Any]) -> str:
    """report.md's text for one specialization report dict (as :func:`write_report` takes): the
    metrics table, a warning when the measured latency exceeds the budget, artifacts with their
    check against torch, and the runtime and command."""
    m = rep.get("measured_latency_ms") or {}
    lines = [
        f"# ofa-deploy specialization: {rep['target']} @ {rep['budget_ms']} ms"
        + ("" if rep.get("precision", "fp32") == "fp32" else f", {rep['precision']}"),
        "",
        f"- Supernet: `{rep.get('supernet')}` (space `{rep['space']}`)",
        f"- Precision: {rep.get('precision', 'fp32')} (latency table: "
        f"{rep.get('lut_precision', 'fp32')})",
        f"- Arch: `{rep['arch_string']}`",
        f"- LUT: `{rep.get('lut_path')}` (space latency range {_fmt(rep['lut_min_ms'])} .. "
        f"{_fmt(rep['lut_max_ms'])} ms)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| budget (ms) | {_fmt(rep['budget_ms'])} |",
        f"| predicted latency (ms) | {_fmt(rep['predicted_latency_ms'])} |",
        f"| measured latency median (ms) | {_fmt(m.get('median'))} (p10 {_fmt(m.get('p10'))}, "
        f"p90 {_fmt(m.get('p90'))}) |",
        f"| within budget (measured) | {budget_text(rep.get('within_budget'), _budget_why(rep))} |",
        f"| predicted accuracy | {_fmt(rep['predicted_accuracy'], 4)} |",
        f"| measured accuracy | {_fmt(rep.get('measured_accuracy'), 4)} |",
        f"| params | {rep['params']:,} |",
        f"| MACs | {rep['macs']:,} |",
        "",
    ]
    drop = rep.get("int8_accuracy_drop")
    if drop:
        lines += [f"Predicted int8 accuracy = float predictor ({_fmt(rep.get('predicted_accuracy_fp32'), 4)}"
                  f") - drop model `{drop.get('model')}`"
                  + (f" ({_fmt(100 * drop['drop'], 3)} points, from `{drop.get('source')}`)"
                     if drop.get("drop") is not None and drop.get("source") else
                     " (drop 0: none fitted for this supernet)" if drop.get("model") == "none"
                     else f" from `{drop.get('source')}`")
                  + "; measured accuracy is of the shipped int8 files.", ""]
    if rep.get("by_precision"):
        lines += ["## fp32 vs int8", ""] + render_precision_table(rep["by_precision"]) + [""]
    if rep.get("budget_admits_every_subnet"):
        lines += [f"The budget admits every subnet: by the LUT they take "
                  f"{_fmt(rep['lut_min_ms'])} .. {_fmt(rep['lut_max_ms'])} ms, so the winner is "
                  f"simply the most accurate one.", ""]
    if rep.get("within_budget") is False:
        lines += [f"**The measured latency exceeds the budget** by "
                  f"{_fmt(m.get('median', 0) - rep['budget_ms'], 2)} ms: the LUT predicted "
                  f"{_fmt(rep['predicted_latency_ms'])} ms. Re-profile the target or lower the "
                  f"budget.", ""]
    rounds = rep.get("rounds") or []
    if rounds:
        q = rep.get("latency_quantile", 50)
        lines += ["## Rounds (closed loop)", "",
                  f"The exported winner of each round is measured (p{q} must fit the budget); "
                  "over budget, the effective budget is tightened by the observed ratio, far "
                  "under it, loosened.", "",
                  f"| round | effective budget ms | predicted ms | measured p{q} ms | within "
                  "budget | chosen | arch |", "|---|---|---|---|---|---|---|"]
        for h in rounds:
            lines.append(f"| {h['round']} | {_fmt(h['effective_budget_ms'])} | "
                         f"{_fmt(h['predicted_latency_ms'])} | {_fmt(h['measured_ms'])} | "
                         f"{budget_text(h['within_budget'])} | {'yes' if h.get('chosen') else ''} | "
                         f"`{h['arch_string']}` |")
        lines.append("")
        notes = [f"Round {h['round']}: {h['note']}." for h in rounds if h.get("note")]
        lines += notes + ([""] if notes else [])
    if rep.get("protocol"):
        from profilers.protocol import MeasurementProtocol

        lines += [f"Measured with: {MeasurementProtocol.from_state(rep['protocol']).describe()}"
                  f"; table rescaled x{_fmt(rep.get('speed_scale'))} to today's speed.", ""]
    for w in rep.get("warnings") or []:
        lines += [f"**Warning:** {w}", ""]
    arts = rep.get("artifacts", {})
    if arts:
        lines += ["## Artifacts", "", "| file | precision | bytes | check vs torch (max abs diff)"
                  " | top-1 agreement with float |", "|---|---|---|---|---|"]
        for name, a in arts.items():
            lines.append(f"| `{a.get('path')}` | {a.get('precision', 'fp32')} | "
                         f"{_fmt(a.get('bytes'))} | {_fmt(a.get('max_abs_diff'), 6)} | "
                         f"{_fmt(a.get('top1_agreement'), 4)} |")
        lines.append("")
    lines += ["## Runtime", "", "```", json.dumps(rep.get("runtime", {}), indent=1), "```", "",
              f"Command: `{rep.get('command')}`", ""]
    return "\n".join(lines)


def write_report(rep: Mapping[str, Any], out_dir: "str | Path") -> Dict[str, str]:
    """Write ``report.json`` and ``report.md`` for ``rep`` into ``out_dir`` atomically; returns
    their paths by kind (``json``, ``markdown``)."""
    out = Path(out_dir)
    atomic_write_text(out / "report.json", json.dumps(round_floats(rep), indent=2))
    atomic_write_text(out / "report.md", render_markdown(rep))
    return {"json": str(out / "report.json"), "markdown": str(out / "report.md")}


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    return plt


def pareto_front(latency: Sequence[float], accuracy: Sequence[float]) -> List[tuple]:
    """The non-dominated (latency, accuracy) points, fastest first: no other point is both at
    least as fast and more accurate."""
    front: List[tuple] = []
    best = -math.inf
    for x, y in sorted(zip(map(float, latency), map(float, accuracy)), key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def zoom_range(values: Sequence[float], budget: float, *, pad: float = 0.08,
               reach: float = 2.0) -> tuple:
    """Axis limits ``(lo, hi, budget_shown)`` that fit ``values`` (padded); the budget is
    drawn inside when it lies within ``reach`` x the data's span above it, otherwise it would
    squeeze every point into a corner, so it is named at the edge instead."""
    lo, hi = float(min(values)), float(max(values))
    span = max(hi - lo, 1e-3 * max(abs(hi), 1e-9))
    shown = budget <= hi + reach * span
    if shown:
        hi = max(hi, budget)
        lo = min(lo, budget)
    return lo - pad * span, hi + pad * span, shown


def plot_search(path: "str | Path", *, pop_latency: Sequence[float], pop_accuracy: Sequence[float],
                budget_ms: float, best: tuple, pareto: Sequence[tuple] = (),
                title: str = "") -> str:
    """Save a PNG of the searched population's predicted latency against predicted accuracy:
    its Pareto front, the winner ``best`` (latency, accuracy), other budgets' winners
    (``pareto``) and the budget, zoomed to the population (a far budget is named at the edge);
    returns ``path``. Imports matplotlib, headless."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    xs = [float(v) for v in pop_latency] + [float(best[0])]
    lo, hi, shown = zoom_range(xs, budget_ms)
    ax.scatter(pop_latency, pop_accuracy, s=8, alpha=0.5, label="searched population")
    front = pareto_front(pop_latency, pop_accuracy)
    if front:
        fx, fy = zip(*front)
        ax.step(fx, fy, where="post", color="tab:orange", lw=1.5, label="Pareto front")
    others = [p for p in pareto if tuple(p) != tuple(best) and lo <= p[0] <= hi]
    if others:
        ox, oy = zip(*sorted(others))
        ax.scatter(ox, oy, marker="D", s=30, color="tab:purple", label="other budgets' winners",
                   zorder=4)
    if shown:
        ax.axvline(budget_ms, color="tab:red", ls="--", lw=1, label=f"budget {budget_ms:g} ms")
    else:
        ax.annotate(f"budget {budget_ms:g} ms (off the right edge: every subnet here fits)",
                    xy=(0.99, 0.02), xycoords="axes fraction", ha="right", fontsize=8,
                    color="tab:red")
    ax.scatter([best[0]], [best[1]], marker="*", s=160, color="tab:green", label="winner", zorder=5)
    ax.set_xlim(lo, hi)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("predicted accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def plot_pred_vs_measured(path: "str | Path", rows: Sequence[Mapping[str, Any]],
                          budgets: Sequence[float] = (), highlight: str | None = None) -> str:
    """Save a PNG of measured against predicted latency; returns ``path``.

    ``rows``: dicts with ``label``, ``predicted_ms``, ``measured_ms`` (+ optional
    ``p10_ms``/``p90_ms``, and ``kind``: ``"validation"`` for the LUT-validation subnets,
    drawn small and unlabelled). ``budgets`` are drawn as horizontal lines (the measured
    latency must stay under them); ``highlight`` is the label of this report's scenario."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.2), dpi=110)
    val = [r for r in rows if r.get("kind") == "validation"]
    main = [r for r in rows if r.get("kind") != "validation"]
    if val:
        ax.scatter([r["predicted_ms"] for r in val], [r["measured_ms"] for r in val], s=10,
                   alpha=0.5, color="tab:gray", label="validation subnets")
    for r in main:
        err = None
        if "p10_ms" in r and "p90_ms" in r:
            # the default estimator (lowest round median) can lie outside the pooled p10..p90
            err = [[max(0.0, r["measured_ms"] - r["p10_ms"])],
                   [max(0.0, r["p90_ms"] - r["measured_ms"])]]
        mine = highlight is not None and r.get("label") == highlight
        ax.errorbar([r["predicted_ms"]], [r["measured_ms"]], yerr=err, fmt="*" if mine else "o",
                    ms=11 if mine else 6, color="tab:green" if mine else "tab:blue")
        ax.annotate(r.get("label", ""), (r["predicted_ms"], r["measured_ms"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    vals = [r[k] for r in rows for k in ("predicted_ms", "measured_ms")] + \
        [r["p90_ms"] for r in rows if "p90_ms" in r]
    top = max(vals) if vals else 1.0
    hidden = []
    for b in sorted(set(budgets)):
        if b <= 2.0 * top:
            ax.axhline(b, color="tab:red", ls="--", lw=1, label=f"budget {b:g} ms")
            top = max(top, b)
        else:
            hidden.append(b)
    if hidden:
        ax.annotate("budget " + ", ".join(f"{b:g}" for b in hidden) + " ms: far above",
                    xy=(0.99, 0.02), xycoords="axes fraction", ha="right", fontsize=8,
                    color="tab:red")
    hi = top * 1.1
    ax.plot([0, hi], [0, hi], "k:", lw=1, label="measured = predicted")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("measured latency (ms)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def write_summary(reports: List[Mapping[str, Any]], out_dir: "str | Path") -> Dict[str, str]:
    """Write ``summary.json`` and ``summary.md`` (one row per scenario report: budget, predicted and
    measured latency and accuracy, MACs, whether within budget) into ``out_dir``; returns their
    paths by kind."""
    out = Path(out_dir)
    rows = []
    for r in reports:
        m = r.get("measured_latency_ms") or {}
        rows.append({k: r.get(k) for k in ("scenario", "target", "budget_ms", "arch_string",
                                           "predicted_latency_ms", "predicted_accuracy",
                                           "measured_accuracy", "params", "macs",
                                           "within_budget")} | {"measured_median_ms": m.get("median"),
                                                                "precision": r.get("precision", "fp32")})
    # one side-by-side entry per (target, budget) whose reports hold several precisions
    sides, seen = [], set()
    for r in reports:
        k = (r.get("target"), r.get("budget_ms"), r.get("budget_mmacs"))
        if r.get("by_precision") and k not in seen:
            seen.add(k)
            sides.append({"target": k[0], "budget_ms": k[1], "budget_mmacs": k[2],
                          "by_precision": r["by_precision"]})
    doc = {"scenarios": rows} | ({"by_precision": sides} if sides else {})
    atomic_write_text(out / "summary.json", json.dumps(round_floats(doc), indent=2))
    md = ["| scenario | target | precision | budget ms | predicted ms | measured ms | pred. acc "
          "| meas. acc | MACs | within budget |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['scenario']} | {r['target']} | {r['precision']} | {_fmt(r['budget_ms'])} | "
                  f"{_fmt(r['predicted_latency_ms'])} | {_fmt(r['measured_median_ms'])} | "
                  f"{_fmt(r['predicted_accuracy'], 4)} | {_fmt(r['measured_accuracy'], 4)} | "
                  f"{r['macs']:,} | {budget_text(r['within_budget'], _budget_why(r))} |")
    for side in sides:
        md += ["", f"## fp32 vs int8: {side['target']} @ {side['budget_ms']:g} ms", ""]
        md += render_precision_table(side["by_precision"])
    atomic_write_text(out / "summary.md", "\n".join(md) + "\n")
    return {"json": str(out / "summary.json"), "markdown": str(out / "summary.md")}
