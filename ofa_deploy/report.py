"""Specialization reports: report.json (machines), report.md (people), plots."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

from supernet.fileio import atomic_write_text

__all__ = ["write_report", "render_markdown", "plot_search", "plot_pred_vs_measured",
           "write_summary"]


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def render_markdown(rep: Mapping[str, Any]) -> str:
    """report.md's text for one specialization report dict (as :func:`write_report` takes): the
    metrics table, a warning when the measured latency exceeds the budget, artifacts with their
    check against torch, and the runtime and command."""
    m = rep.get("measured_latency_ms") or {}
    lines = [
        f"# ofa-deploy specialization: {rep['target']} @ {rep['budget_ms']} ms",
        "",
        f"- Supernet: `{rep.get('supernet')}` (space `{rep['space']}`)",
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
        f"| within budget (measured) | {rep.get('within_budget')} |",
        f"| predicted accuracy | {_fmt(rep['predicted_accuracy'], 4)} |",
        f"| measured accuracy | {_fmt(rep.get('measured_accuracy'), 4)} |",
        f"| params | {rep['params']:,} |",
        f"| MACs | {rep['macs']:,} |",
        "",
    ]
    if rep.get("within_budget") is False:
        lines += [f"**The measured latency exceeds the budget** by "
                  f"{_fmt(m.get('median', 0) - rep['budget_ms'], 2)} ms: the LUT predicted "
                  f"{_fmt(rep['predicted_latency_ms'])} ms. Re-profile the target or lower the "
                  f"budget.", ""]
    arts = rep.get("artifacts", {})
    if arts:
        lines += ["## Artifacts", "", "| file | check vs torch (max abs diff) |", "|---|---|"]
        for name, a in arts.items():
            lines.append(f"| `{a.get('path')}` | {_fmt(a.get('max_abs_diff'), 6)} |")
        lines.append("")
    lines += ["## Runtime", "", "```", json.dumps(rep.get("runtime", {}), indent=1), "```", "",
              f"Command: `{rep.get('command')}`", ""]
    return "\n".join(lines)


def write_report(rep: Mapping[str, Any], out_dir: "str | Path") -> Dict[str, str]:
    """Write ``report.json`` and ``report.md`` for ``rep`` into ``out_dir`` atomically; returns
    their paths by kind (``json``, ``markdown``)."""
    out = Path(out_dir)
    atomic_write_text(out / "report.json", json.dumps(rep, indent=2))
    atomic_write_text(out / "report.md", render_markdown(rep))
    return {"json": str(out / "report.json"), "markdown": str(out / "report.md")}


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_search(path: "str | Path", *, pop_latency: Sequence[float], pop_accuracy: Sequence[float],
                budget_ms: float, best: tuple, pareto: Sequence[tuple] = (),
                title: str = "") -> str:
    """Save a PNG of the searched population's predicted latency against predicted accuracy, with
    the budget line, the Pareto front and the winner ``best`` (latency, accuracy); returns
    ``path``. Imports matplotlib, headless."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    ax.scatter(pop_latency, pop_accuracy, s=8, alpha=0.5, label="searched population")
    if pareto:
        px, py = zip(*sorted(pareto))
        ax.plot(px, py, "o-", color="tab:orange", label="Pareto front")
    ax.axvline(budget_ms, color="tab:red", ls="--", lw=1, label=f"budget {budget_ms:g} ms")
    ax.scatter([best[0]], [best[1]], marker="*", s=160, color="tab:green", label="winner", zorder=5)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("predicted accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def plot_pred_vs_measured(path: "str | Path", rows: Sequence[Mapping[str, Any]]) -> str:
    """``rows``: dicts with ``label``, ``predicted_ms``, ``measured_ms`` (+ optional p10/p90)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.2), dpi=110)
    xs = [r["predicted_ms"] for r in rows]
    ys = [r["measured_ms"] for r in rows]
    err = None
    if all("p10_ms" in r and "p90_ms" in r for r in rows):
        err = [[y - r["p10_ms"] for y, r in zip(ys, rows)], [r["p90_ms"] - y for y, r in zip(ys, rows)]]
    ax.errorbar(xs, ys, yerr=err, fmt="o")
    for x, y, r in zip(xs, ys, rows):
        ax.annotate(r.get("label", ""), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    hi = max(xs + ys) * 1.1 if xs else 1
    ax.plot([0, hi], [0, hi], "k--", lw=1, label="y = x")
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
                                           "within_budget")} | {"measured_median_ms": m.get("median")})
    atomic_write_text(out / "summary.json", json.dumps({"scenarios": rows}, indent=2))
    md = ["| scenario | target | budget ms | predicted ms | measured ms | pred. acc | meas. acc "
          "| MACs | within budget |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['scenario']} | {r['target']} | {_fmt(r['budget_ms'])} | "
                  f"{_fmt(r['predicted_latency_ms'])} | {_fmt(r['measured_median_ms'])} | "
                  f"{_fmt(r['predicted_accuracy'], 4)} | {_fmt(r['measured_accuracy'], 4)} | "
                  f"{r['macs']:,} | {r['within_budget']} |")
    atomic_write_text(out / "summary.md", "\n".join(md) + "\n")
    return {"json": str(out / "summary.json"), "markdown": str(out / "summary.md")}
